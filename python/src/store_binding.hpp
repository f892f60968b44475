#pragma once
// A corokv store as a Python object: the binding owns an io_context and runs
// it on one I/O thread (the C++ library starts none); Python threads start
// operations with the GIL released and either wait for them (the plain
// calls), or collect them from a completion queue (submit_* and the
// asyncio variants, corokv/__init__.py).
//
// Every method checks its object was initialised and counts as an entry
// into the binding (construction.hpp); the stores close themselves at
// interpreter exit (lifetime.hpp).
//
// bind_store<Store> is instantiated once per store type, each in its own
// translation unit (embedded_binding.cpp, cluster_binding.cpp), so that the
// two compile in parallel.

#include "arguments.hpp"
#include "construction.hpp"
#include "lifetime.hpp"
#include "mapped_memory.hpp"
#include "operation.hpp"
#include "outcome.hpp"
#include "python_types.hpp"
#include "store_operations.hpp"

#include <corokv/store.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace corokv::python {

// ------------------------------------------------------------ options from Python
inline duration seconds(double s) { return std::chrono::duration_cast<duration>(std::chrono::duration<double>(s)); }

// The metadata cache allocates its entries up front: at most one key per
// this many bytes of the machine's memory (a bound above an entry's size
// with its key, not a measurement).
inline constexpr std::uint64_t bytes_per_cached_key = 256;

// The store options both Python store classes take.
inline client::store_options python_store_options(py::handle lease_ttl, py::handle cache_capacity, py::handle buffer_pool_size,
                                          py::handle populate) {
  client::store_options o;
  o.lease_ttl = seconds(seconds_arg(lease_ttl, "lease_ttl"));
  o.cache_capacity =
      static_cast<std::size_t>(int_arg(cache_capacity, "cache_capacity", 0, physical_memory() / bytes_per_cached_key));
  o.buffer_pool_size = memory_size_arg(buffer_pool_size, "buffer_pool_size", /*none_allowed=*/true);
  o.populate_segments = bool_arg(populate, "populate");
  return o;
}

// The store's counters as Python objects, made with the C API only (no
// Python code runs: see lifetime.hpp).
inline py::object json_to_python(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      py::dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d[py::str(it.key())] = json_to_python(it.value());
      return d;
    }
    case nlohmann::json::value_t::array: {
      py::list l;
      for (const auto& v : j) l.append(json_to_python(v));
      return l;
    }
    case nlohmann::json::value_t::string:
      return py::str(j.get_ref<const std::string&>());
    case nlohmann::json::value_t::boolean:
      return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return py::int_(j.get<std::int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return py::int_(j.get<std::uint64_t>());
    case nlohmann::json::value_t::number_float:
      return py::float_(j.get<double>());
    default:
      return py::none();
  }
}

// ------------------------------------------------------------ completion in place
// The executor the binding's completion handlers are bound to: it runs a
// handler where it is dispatched or posted, at once. A handler here only
// records the result and wakes its waiter (or queues the operation), never
// calls back into the store, so running it inside the store's initiating
// call is safe; and a read the store finishes in that call (metadata at
// hand, bytes moved by memcpy) then completes with no thread hop at all.
// Without it, the store posts the handler to the I/O thread, which must
// wake up only to wake the caller again: two cross-thread wake-ups, most of
// a small batch's cost from Python.
class inline_executor {
 public:
  explicit inline_executor(boost::asio::execution_context& context) noexcept : context_(&context) {}
  boost::asio::execution_context& query(boost::asio::execution::context_t) const noexcept { return *context_; }
  static constexpr boost::asio::execution::blocking_t query(boost::asio::execution::blocking_t) noexcept {
    return boost::asio::execution::blocking.always;
  }
  // boost::asio::post asks for a never-blocking executor; this one answers with
  // itself: running the handler in place is its purpose (see above).
  inline_executor require(boost::asio::execution::blocking_t::never_t) const noexcept { return *this; }
  template <class F>
  void execute(F&& f) const {
    std::forward<F>(f)();
  }
  friend bool operator==(const inline_executor& a, const inline_executor& b) noexcept { return a.context_ == b.context_; }
  friend bool operator!=(const inline_executor& a, const inline_executor& b) noexcept { return !(a == b); }

 private:
  boost::asio::execution_context* context_;
};

// ------------------------------------------------------------ the store
// The Python class name of py_store<Store>, for messages: specialised
// beside each binding, as `static constexpr const char* name`.
template <class Store>
struct store_class;

template <class Store>
class py_store final : public exit_participant {
 public:
  static const char* python_name() { return store_class<Store>::name; }

  // `make` builds the store on the binding's executor; `segment_size`
  // bytes of this process's memory are contributed if not 0.
  template <class Make>
  py_store(Make make, std::uint64_t segment_size) {
    call_scope scope;
    if (exit_guard().exiting()) throw py::value_error(exiting_message);
    try {
      store_.reset(make(io_.get_executor()));
    } catch (const boost::system::system_error& e) {  // the system refused (memory, a port): corokv.Error
      raise_error(e.code(), e.what());
    } catch (const std::system_error& e) {
      raise_error(e.code(), e.what());
    }
    runner_ = std::thread([this] {
      io_.run();
      ran_out_->set();
    });
    try {
      if (segment_size != 0) add_segment(segment_size);
      if (!exit_guard().add(this)) throw py::value_error(exiting_message);
    } catch (...) {
      shut_down();  // with the GIL: nothing else can reach this store yet
      throw;
    }
  }
  py_store(const py_store&) = delete;
  py_store& operator=(const py_store&) = delete;
  ~py_store() {
    call_scope scope;
    exit_guard().remove(this);
    if (!torn_down()) {
      without_gil nogil;
      shut_down();
    }
  }

  // Waits for the operations in flight, destroys the store and stops the
  // I/O thread; completions nobody drained are dropped. Later calls raise.
  void close() {
    if (!torn_down()) {
      without_gil nogil;
      shut_down();
    }
    std::vector<std::shared_ptr<completion_queue>> queues;
    std::shared_ptr<completion_queue> default_queue;
    {
      std::lock_guard lock(mu_);
      queues = std::exchange(queues_, {});
      default_queue = std::move(default_queue_);
    }
    // Dropped here, with the GIL: queued operations hold Python buffers.
    queues.clear();
    default_queue.reset();
    regions_.take_all();
  }
  bool closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  // ValueError if closed.
  void live() const {
    std::lock_guard lock(mu_);
    if (closed_) throw_closed();
  }

  // ---- exit_participant (lifetime.hpp)
  void refuse_new_calls() override {
    std::vector<std::shared_ptr<cancel_state>> cancels;
    {
      std::lock_guard lock(mu_);
      if (!closed_) closed_at_exit_ = true;
      closed_ = true;
      if (tearing_down_) return;  // its operations are finishing
      for (auto& [ticket, c] : cancellable_) cancels.push_back(c);
    }
    for (auto& c : cancels) post_cancel(c);
  }
  void tear_down() override { shut_down(); }

  std::uint64_t add_segment(std::uint64_t size) {
    store_use use(*this);
    boost::system::error_code ec;
    segment_id id = 0;
    {
      without_gil nogil;
      auto done = std::make_shared<completion_flag>();
      store_->add_segment(size, [&ec, &id, done](boost::system::error_code e, segment_id s) {
        ec = e;
        id = s;
        done->set();
      });
      done->wait();
    }
    if (ec) raise_error(ec);
    return id;
  }

  // ---- registered memory
  // A writable buffer-protocol object (held until unregistered), or an
  // address and a size: memory this process can read and write (checked
  // against its mappings), the caller's to keep alive.
  void register_buffer(py::handle object_or_address, py::handle size_arg) {
    store_use use(*this);
    std::uintptr_t start = 0;
    region_table::region r;
    if (PyLong_Check(object_or_address.ptr()) && !PyBool_Check(object_or_address.ptr())) {
      if (size_arg.is_none()) throw py::type_error("register_buffer(address, size): size is missing");
      start = static_cast<std::uintptr_t>(int_arg(object_or_address, "address", 1));
      r.size = static_cast<std::size_t>(int_arg(size_arg, "size", 1));
      if (!mapped_read_write(start, r.size))
        throw py::value_error("register_buffer: the " + std::to_string(r.size) + " bytes at address " +
                              std::to_string(start) + " are not memory this process can read and write");
    } else {
      auto pin = std::make_shared<held_buffer>();
      if (!pin->acquire(object_or_address.ptr(), /*writable=*/true))
        wrong_type("buffer", "a writable, C-contiguous buffer of plain data (not of dtype object), or an address", object_or_address);
      if (!size_arg.is_none() && int_arg(size_arg, "size") != pin->size())
        throw py::value_error("size differs from the buffer's");
      if (pin->size() == 0) throw py::value_error("buffer is empty");
      start = reinterpret_cast<std::uintptr_t>(pin->data());
      r.size = pin->size();
      r.pin = std::move(pin);
    }
    std::error_code ec;
    {
      without_gil nogil;
      ec = store_->register_buffer(boost::asio::mutable_buffer(reinterpret_cast<void*>(start), r.size));
    }
    if (ec) raise_error(ec);
    const std::size_t size_registered = r.size;
    if (!regions_.insert(start, std::move(r))) {
      // The store refuses overlapping regions, so the table cannot hold
      // this start already (short of a race with an unregister of the same
      // region in another thread); undo and say so.
      {
        without_gil nogil;
        (void)store_->unregister_buffer(boost::asio::mutable_buffer(reinterpret_cast<void*>(start), size_registered));
      }
      raise_error(errc::internal_error);
    }
  }

  void unregister_buffer(py::handle object_or_address) {
    store_use use(*this);
    std::uintptr_t start = 0;
    if (PyLong_Check(object_or_address.ptr()) && !PyBool_Check(object_or_address.ptr())) {
      start = static_cast<std::uintptr_t>(int_arg(object_or_address, "address"));
    } else {
      held_buffer view;
      if (!view.acquire(object_or_address.ptr(), /*writable=*/false))
        wrong_type("buffer", "a registered buffer or its address", object_or_address);
      start = reinterpret_cast<std::uintptr_t>(view.data());
    }
    const std::optional<std::size_t> size = regions_.size_of(start);
    if (!size) raise_error(errc::invalid_argument);  // not registered here
    std::error_code ec;
    {
      without_gil nogil;
      ec = store_->unregister_buffer(boost::asio::mutable_buffer(reinterpret_cast<void*>(start), *size));
    }
    if (ec) raise_error(ec);  // still registered, still in the table
    regions_.erase(start);     // its pin goes here, with the GIL (or with the last batch using it)
  }
  std::size_t registered_buffers() const { return regions_.size(); }

  // ---- operations: build, then run (wait) or submit (queue)
  // An operation of entry Op (store_operations.hpp), its arguments taken
  // and checked; raises for a bad argument.
  template <class Op, class... Handles>
  std::shared_ptr<typed_operation<Op>> prepare(Handles... arguments) {
    auto op = std::make_shared<typed_operation<Op>>();
    Op::build(*op, regions_, arguments...);
    op->compact();
    return op;
  }

  // Runs the operation with the GIL released; its result, or raises.
  template <class Op>
  py::object run(std::shared_ptr<typed_operation<Op>> op) {
    begin(*op, nullptr);
    {
      without_gil nogil;
      start(op);
      op->done->wait();
    }
    auto [result, error] = outcome(*op);
    if (!error.is_none()) {
      PyErr_SetObject(types().error_type.ptr(), error.ptr());
      throw py::error_already_set();
    }
    return result;
  }

  // Starts the operation; its completion lands in `queue` (the store's own
  // if None). Returns its ticket.
  template <class Op>
  std::uint64_t submit(std::shared_ptr<typed_operation<Op>> op, py::handle queue_arg) {
    std::shared_ptr<completion_queue> queue;
    if (queue_arg.is_none())
      queue = own_queue();
    else if (py::isinstance<completion_queue>(queue_arg))
      queue = queue_arg.cast<std::shared_ptr<completion_queue>>();
    else
      wrong_type("queue", "a CompletionQueue or None", queue_arg);
    if (!owns(*queue)) throw py::value_error("the queue belongs to another store");
    begin(*op, queue.get());
    op->cancel = std::make_shared<cancel_state>();
    {
      std::lock_guard lock(mu_);
      cancellable_.emplace(op->ticket, op->cancel);
    }
    {
      without_gil nogil;  // the store may do the whole transfer in start()
      start(op);
    }
    return op->ticket;  // this reference is dropped here, with the GIL
  }

  // Asks a submitted operation to stop. It still completes (with cancelled,
  // or with its results if it was too far along), and only once nothing
  // can still write into its buffers. False if it had already completed.
  bool cancel(py::handle ticket_arg) {
    const std::uint64_t ticket = int_arg(ticket_arg, "ticket");
    std::shared_ptr<cancel_state> c;
    {
      std::lock_guard lock(mu_);
      auto it = cancellable_.find(ticket);
      if (it == cancellable_.end()) return false;
      c = it->second;
    }
    post_cancel(c);
    return true;
  }

  // ---- completion queues
  // The queues this store keeps alive (its operations point at them).
  bool owns(const completion_queue& q) const {
    std::lock_guard lock(mu_);
    if (default_queue_.get() == &q) return true;
    for (auto& mine : queues_)
      if (mine.get() == &q) return true;
    return false;
  }
  std::shared_ptr<completion_queue> own_queue() {
    std::lock_guard lock(mu_);
    if (closed_) throw_closed();
    if (!default_queue_) default_queue_ = std::make_shared<completion_queue>();
    return default_queue_;
  }
  // A queue for one event loop (the asyncio variants make one per loop);
  // kept until the store is closed.
  std::shared_ptr<completion_queue> new_queue() {
    auto q = std::make_shared<completion_queue>();
    std::lock_guard lock(mu_);
    if (closed_) throw_closed();
    queues_.push_back(q);
    return q;
  }
  // For benchmarks/python_bench.py: the same batch_get_into, `iterations`
  // times in a row, awaited by a C++ coroutine on the I/O thread, as a C++
  // program would (no Python in the loop). Seconds it took.
  double cpp_get_into_loop(py::handle keys, py::handle buffers, py::handle query_results, py::handle iterations_arg) {
    const std::size_t iterations = static_cast<std::size_t>(int_arg(iterations_arg, "iterations"));
    auto op = prepare<ops::batch_get_into>(keys, buffers, query_results, py::bool_(false));
    if (!op->refused.empty()) raise_error(errc::invalid_argument);
    begin(*op, nullptr);
    double elapsed = 0;
    boost::system::error_code failure;
    {
      without_gil nogil;
      boost::asio::co_spawn(io_, get_into_loop(*store_, *op, iterations, elapsed, failure),
                     [done = op->done, &failure](std::exception_ptr e) {
                       if (e) failure = boost::system::error_code(make_error_code(errc::internal_error));
                       done->set();
                     });
      op->done->wait();
    }
    finish_outside(*op);  // no handler of the binding completed it
    if (failure) raise_error(failure);
    return elapsed;
  }

  // Operations started and not yet completed (a completed one no longer
  // counts once its result can be seen).
  std::size_t in_flight() const {
    std::lock_guard lock(mu_);
    return pending_;
  }
  py::object counters() {
    store_use use(*this);
    return json_to_python(store_->counters_json());
  }
  std::uint64_t node() {
    store_use use(*this);
    return store_->node();
  }
  // f(store), counted as a use of the store (see store_use).
  template <class F>
  auto with_store(F f) {
    store_use use(*this);
    return f(*store_);
  }
  // Whether [address, address + size) lies in a region registered here.
  bool covers(py::handle address, py::handle size) const {
    std::shared_ptr<held_buffer> ignored;
    return regions_.covers(static_cast<std::uintptr_t>(int_arg(address, "address")),
                           static_cast<std::size_t>(int_arg(size, "size")), ignored);
  }

 private:
  // Records the store's answer and completes the operation.
  template <class Op>
  struct completion {
    py_store* self;
    std::shared_ptr<typed_operation<Op>> op;
    void operator()(boost::system::error_code ec, typename Op::answer value) {
      op->ec = ec;
      op->answer = std::move(value);
      self->complete(std::move(op));
    }
  };

  static boost::asio::awaitable<void> get_into_loop(Store& store, operation& op, std::size_t iterations, double& elapsed,
                                             boost::system::error_code& failure) {
    const auto started = clock_type::now();
    for (std::size_t i = 0; i < iterations && !failure; ++i) {
      std::vector<client::get_result> got;
      if (op.use_given)
        std::tie(failure, got) = co_await store.batch_get(op.sent(), std::span<const query_result>(op.given), op.destinations,
                                                          op.get_opts, boost::asio::as_tuple(boost::asio::deferred));
      else
        std::tie(failure, got) = co_await store.batch_get(op.sent(), op.destinations, op.get_opts, boost::asio::as_tuple(boost::asio::deferred));
      for (const auto& g : got)
        if (!g.ok() && !failure) failure = make_error_code(g.status);
    }
    elapsed = std::chrono::duration<double>(clock_type::now() - started).count();
  }

  static constexpr const char* exiting_message = "the interpreter is exiting: no new store can be made";
  [[noreturn]] void throw_closed() const {
    throw py::value_error(closed_at_exit_ ? "operation on a closed store (closed at interpreter exit)"
                                          : "operation on a closed store");
  }
  // Emitted on the I/O thread, where the handler runs: serialised with it.
  void post_cancel(const std::shared_ptr<cancel_state>& c) {
    boost::asio::post(io_, [c] {
      if (!c->finished) c->signal.emit(boost::asio::cancellation_type::all);
    });
  }
  bool torn_down() const {
    std::lock_guard lock(mu_);
    return torn_down_;
  }

  // Counts a direct use of the store (not an operation) as in flight, so
  // that close() on another thread waits for it instead of destroying the
  // store under it.
  class store_use {
   public:
    explicit store_use(py_store& s) : s_(s) { s_.enter(); }
    store_use(const store_use&) = delete;
    store_use& operator=(const store_use&) = delete;
    ~store_use() { s_.end_operation(); }

   private:
    py_store& s_;
  };
  void enter() {
    std::lock_guard lock(mu_);
    if (closed_) throw_closed();
    ++in_flight_;
  }

  void begin(operation& op, completion_queue* queue) {
    std::lock_guard lock(mu_);
    if (closed_) throw_closed();
    op.ticket = next_ticket_++;
    op.queue = queue;
    ++in_flight_;
    ++pending_;
  }

  // Without the GIL. Hands the operation to the store (or completes it at
  // once if every key was refused).
  template <class Op>
  void start(const std::shared_ptr<typed_operation<Op>>& op) {
    if (!op->any_sent()) {
      complete(op);
      return;
    }
    try {
      auto handler = boost::asio::bind_executor(inline_executor(io_), completion<Op>{this, op});
      if (op->cancel)
        Op::start(*store_, *op, boost::asio::bind_cancellation_slot(op->cancel->signal.slot(), std::move(handler)));
      else
        Op::start(*store_, *op, std::move(handler));
    } catch (...) {
      // Not started: nothing will complete it. (The store reports its own
      // failures through handlers; this is out of memory and the like.)
      finish_outside(*op);
      throw;
    }
  }

  // On the I/O thread (or in start(), for a batch the store never saw).
  void complete(std::shared_ptr<operation> op) {
    {
      std::lock_guard lock(mu_);
      --pending_;  // before the caller can see the result
      if (op->cancel) cancellable_.erase(op->ticket);
    }
    if (op->cancel) op->cancel->finished = true;
    if (completion_queue* q = op->queue) {
      q->push(std::move(op));
    } else {
      // The waiting thread holds the operation; drop this reference first,
      // so that the last one is never dropped here (see operation.hpp).
      std::shared_ptr<completion_flag> done = op->done;
      op.reset();
      done->set();
    }
    end_operation();
  }

  // The bookkeeping of complete() for an operation that ends without it
  // (never started, or awaited by the binding's own coroutine).
  void finish_outside(const operation& op) {
    std::lock_guard lock(mu_);
    cancellable_.erase(op.ticket);
    --pending_;
    if (--in_flight_ == 0) idle_.notify_all();
  }

  void end_operation() {
    std::lock_guard lock(mu_);
    if (--in_flight_ == 0) idle_.notify_all();
  }

 public:
  // Waits for the operations in flight, destroys the store and stops the
  // I/O thread; without the GIL, unless no other thread can reach the store
  // (lifetime.hpp). The first caller tears down; a concurrent one waits
  // until that is done.
  void shut_down() {
    std::unique_lock lock(mu_);
    closed_ = true;
    idle_.wait(lock, [&] { return in_flight_ == 0; });
    if (tearing_down_) {
      idle_.wait(lock, [&] { return torn_down_; });
      return;
    }
    tearing_down_ = true;
    lock.unlock();
    store_.reset();  // leaves the cluster; the I/O thread still runs meanwhile
    // What the store queued as it went (a cluster node's unregister, which
    // unmounts its segments at the master; the session sends it within
    // 500 ms) still goes out: the I/O thread runs until it runs out of
    // work, for at most drain_time. Stopped at once, the node's segments
    // would stay listed until the master declares it dead, and puts
    // placed there would fail.
    work_.reset();
    if (!ran_out_->wait_for(drain_time)) io_.stop();
    if (runner_.joinable()) runner_.join();
    lock.lock();
    torn_down_ = true;
    idle_.notify_all();
  }

 private:

  boost::asio::io_context io_{1};
  static constexpr std::chrono::milliseconds drain_time{1000};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ = boost::asio::make_work_guard(io_);
  std::unique_ptr<Store> store_;
  std::shared_ptr<completion_flag> ran_out_ = std::make_shared<completion_flag>();  // io_.run() returned
  std::thread runner_;
  region_table regions_;

  mutable std::mutex mu_;
  std::condition_variable idle_;
  std::size_t in_flight_ = 0;  // operations and direct uses not finished: close() waits for 0
  std::size_t pending_ = 0;    // operations whose result is not out yet
  bool closed_ = false;
  bool closed_at_exit_ = false;  // by the exit hook, not by close()
  bool tearing_down_ = false;
  bool torn_down_ = false;
  std::uint64_t next_ticket_ = 1;
  std::map<std::uint64_t, std::shared_ptr<cancel_state>> cancellable_;
  std::shared_ptr<completion_queue> default_queue_;
  std::vector<std::shared_ptr<completion_queue>> queues_;
};

// ------------------------------------------------------------ the Python class
template <std::size_t>
using handle_arg = py::handle;

// One entry of store_operations as `name` (blocking) and `submit_name` (a
// ticket; the asyncio variants await it): one builder, so both forms take
// and check their arguments alike.
template <class Self, class Op, class Class, std::size_t... I, class... Arguments>
void def_operation_n(Class& cls, std::index_sequence<I...>, const Arguments&... arguments) {
  cls.def(Op::name, method<Self>([](Self& s, handle_arg<I>... a) {
            s.live();
            return s.run(s.template prepare<Op>(a...));
          }),
          arguments...);
  const std::string submit = std::string("submit_") + Op::name;
  cls.def(submit.c_str(), method<Self>([](Self& s, handle_arg<I>... a, py::handle queue) {
            s.live();
            return s.submit(s.template prepare<Op>(a...), queue);
          }),
          arguments..., py::arg("queue") = py::none());
}
template <class Self, class Op, class Class>
void def_operation(Class& cls) {
  std::apply(
      [&](const auto&... arguments) {
        def_operation_n<Self, Op>(cls, std::make_index_sequence<sizeof...(arguments)>{}, arguments...);
      },
      Op::arguments());
}

// The methods every store type has. `cls` is the pybind11 class of
// py_store<Store>; its constructor is bound by the caller.
template <class Store, class Class>
void bind_store_methods(Class& cls) {
  using self_t = py_store<Store>;
  using py::arg;
  const py::object none = py::none();
  cls.def("close", method<self_t>(&self_t::close),
          "Wait for the operations in flight, then leave and stop the I/O thread.")
      .def_property_readonly("closed", method<self_t>(&self_t::closed))
      // Not entries into the binding (lifetime.hpp): __exit__ runs close(),
      // which may be Python code of a subclass, and enters it itself.
      .def("__enter__",
           [](py::handle self) {
             initialised<self_t>(self);
             return py::reinterpret_borrow<py::object>(self);
           })
      .def("__exit__",
           [](py::handle self, py::args) {
             initialised<self_t>(self);
             self.attr("close")();
           })
      .def("add_segment",
           method<self_t>([](self_t& s, py::handle size) {
             return s.add_segment(memory_size_arg(size, "size", /*none_allowed=*/false));
           }),
           arg("size"), "Contribute `size` bytes of this process's memory.")
      .def_property_readonly("node", method<self_t>(&self_t::node))
      .def("register_buffer", method<self_t>(&self_t::register_buffer), arg("buffer"), arg("size") = none,
           "Register a writable buffer, or (address, size), with every lane.")
      .def("unregister_buffer", method<self_t>(&self_t::unregister_buffer), arg("buffer"))
      .def_property_readonly("registered_buffers", method<self_t>(&self_t::registered_buffers))
      .def("counters", method<self_t>(&self_t::counters))
      .def("operations_in_flight", method<self_t>(&self_t::in_flight))
      .def("cancel", method<self_t>(&self_t::cancel), arg("ticket"))
      .def("event_fd", method<self_t>([](self_t& s) { return s.own_queue()->fd(); }))
      .def("drain_completions", method<self_t>([](self_t& s) { return drain_queue(*s.own_queue()); }))
      .def("_new_queue", method<self_t>(&self_t::new_queue))
      .def("_shut_down", method<self_t>([](self_t& s) {
             without_gil nogil;
             s.shut_down();
           }))
      .def("_covers", method<self_t>(&self_t::covers), arg("address"), arg("size"))
      .def("_cpp_get_into_loop", method<self_t>(&self_t::cpp_get_into_loop), arg("keys"), arg("buffers"),
           arg("query_results"), arg("iterations"));

  // The batch operations: blocking, and submit_* (a ticket now, a
  // Completion in the queue later); corokv/__init__.py adds *_async.
  std::apply([&](auto... op) { (def_operation<self_t, decltype(op)>(cls), ...); }, store_operations{});
  cls.attr("_operations") = store_operation_names();
}

}  // namespace corokv::python
