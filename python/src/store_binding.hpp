#pragma once
// A corokv store as a Python object: the binding owns an io_context and runs
// it on one I/O thread (the C++ library starts none); Python threads start
// operations with the GIL released and either wait for them (the plain
// calls), or collect them from a completion queue (submit_* and the
// asyncio variants, corokv/__init__.py).
//
// bind_store<Store> is instantiated once per store type, each in its own
// translation unit (embedded_binding.cpp, cluster_binding.cpp), so that the
// two compile in parallel.

#include "operation.hpp"
#include "outcome.hpp"
#include "python_types.hpp"

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
#include <tuple>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace corokv::python {

// ------------------------------------------------------------ arguments
// The items of a list or tuple (or any sequence), borrowed.
class items {
 public:
  items(py::handle sequence, const char* what) {
    seq_ = py::reinterpret_steal<py::object>(PySequence_Fast(sequence.ptr(), what));
    if (!seq_) throw py::error_already_set();
  }
  std::size_t size() const noexcept { return static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq_.ptr())); }
  PyObject* operator[](std::size_t i) const noexcept {
    return PySequence_Fast_GET_ITEM(seq_.ptr(), static_cast<Py_ssize_t>(i));
  }

 private:
  py::object seq_;
};

// Keys are str (their UTF-8 bytes) or bytes; anything else is a TypeError.
// The operation keeps a reference to each key object and views its bytes.
inline void take_keys(py::handle keys, operation& op) {
  items k(keys, "keys must be a sequence of str or bytes");
  op.keys.reserve(k.size());
  op.key_refs.reserve(k.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    PyObject* key = k[i];
    const char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyUnicode_Check(key)) {
      data = PyUnicode_AsUTF8AndSize(key, &size);  // cached in the str object
      if (!data) throw py::error_already_set();
    } else if (PyBytes_Check(key)) {
      data = PyBytes_AS_STRING(key);
      size = PyBytes_GET_SIZE(key);
    } else {
      throw py::type_error("key " + std::to_string(i) + " is neither str nor bytes");
    }
    op.key_refs.push_back(py::reinterpret_borrow<py::object>(key));
    op.keys.emplace_back(data, static_cast<std::size_t>(size));
  }
}

// A Python int from 0 to 2**64 - 1, or nothing (the Python error cleared).
inline std::optional<std::uint64_t> as_u64(PyObject* o) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    return std::nullopt;
  }
  return v;
}

// An address given as a Python int: ValueError unless it fits.
inline std::uintptr_t to_address(py::handle h) {
  const std::optional<std::uint64_t> a = as_u64(h.ptr());
  if (!a) throw py::value_error("an address must be an int from 0 to 2**64 - 1");
  return static_cast<std::uintptr_t>(*a);
}

// The memory of one caller item: an object exporting a C-contiguous buffer
// (held for the operation), or, where allowed, an (address, size) pair
// inside a registered region. invalid_argument for anything else.
inline errc resolve_memory(PyObject* item, bool writable, bool allow_address, operation& op,
                           const region_table& regions, std::byte*& data, std::size_t& size) {
  if (PyTuple_Check(item)) {
    if (!allow_address || PyTuple_GET_SIZE(item) != 2) return errc::invalid_argument;
    const std::optional<std::uint64_t> address = as_u64(PyTuple_GET_ITEM(item, 0));
    const std::optional<std::uint64_t> length = as_u64(PyTuple_GET_ITEM(item, 1));
    if (!address || !length) return errc::invalid_argument;  // not integers, or negative: this key's bad input
    std::shared_ptr<held_buffer> pin;
    if (!regions.covers(*address, *length, pin)) return errc::invalid_argument;
    if (pin && (op.pins.empty() || op.pins.back() != pin)) op.pins.push_back(std::move(pin));
    data = reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(*address));
    size = static_cast<std::size_t>(*length);
    return errc::success;
  }
  held_buffer h;
  if (!h.acquire(item, writable)) return errc::invalid_argument;
  data = h.data();
  size = h.size();
  op.buffers.push_back(std::move(h));
  return errc::success;
}

// Query results handed back: QueryResult objects, or None where the caller
// has none (the key is then queried again, unless strict). QueryResult
// itself is recognised by its type object, without pybind11's per-object
// type lookup (a hash of the C++ type name: most of the cost of a
// 64-key batch); a subclass takes the general path.
inline void take_query_results(py::handle results, operation& op) {
  items r(results, "query_results must be a sequence of QueryResult or None");
  op.use_given = true;
  op.given.reserve(r.size());
  PyTypeObject* exact = types().query_result_type;
  for (std::size_t i = 0; i < r.size(); ++i) {
    PyObject* item = r[i];
    if (item == Py_None)
      op.given.emplace_back();
    else if (Py_TYPE(item) == exact)
      op.given.push_back(*static_cast<const query_result*>(
          reinterpret_cast<py::detail::instance*>(item)->get_value_and_holder().value_ptr()));
    else
      op.given.push_back(py::cast<const query_result&>(py::handle(item)));
  }
}

// ------------------------------------------------------------ options from Python
inline duration seconds(double s) { return std::chrono::duration_cast<duration>(std::chrono::duration<double>(s)); }

// The store options both Python store classes take.
inline store_options python_store_options(double lease_ttl, std::size_t cache_capacity, std::uint64_t buffer_pool_size,
                                          bool populate) {
  store_options o;
  o.lease_ttl = seconds(lease_ttl);
  o.cache_capacity = cache_capacity;
  o.buffer_pool_size = buffer_pool_size;
  o.populate_segments = populate;
  return o;
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
  explicit inline_executor(asio::execution_context& context) noexcept : context_(&context) {}
  asio::execution_context& query(asio::execution::context_t) const noexcept { return *context_; }
  static constexpr asio::execution::blocking_t query(asio::execution::blocking_t) noexcept {
    return asio::execution::blocking.always;
  }
  // asio::post asks for a never-blocking executor; this one answers with
  // itself: running the handler in place is its purpose (see above).
  inline_executor require(asio::execution::blocking_t::never_t) const noexcept { return *this; }
  template <class F>
  void execute(F&& f) const {
    std::forward<F>(f)();
  }
  friend bool operator==(const inline_executor& a, const inline_executor& b) noexcept { return a.context_ == b.context_; }
  friend bool operator!=(const inline_executor& a, const inline_executor& b) noexcept { return !(a == b); }

 private:
  asio::execution_context* context_;
};

// ------------------------------------------------------------ the store
template <class Store>
class py_store {
 public:
  // `make` builds the store on the binding's executor; `segment_size`
  // bytes of this process's memory are contributed if not 0.
  template <class Make>
  py_store(Make make, std::uint64_t segment_size) {
    store_.reset(make(io_.get_executor()));
    runner_ = std::thread([this] { io_.run(); });
    if (segment_size != 0) {
      try {
        add_segment(segment_size);
      } catch (...) {
        shut_down();
        throw;
      }
    }
  }
  py_store(const py_store&) = delete;
  py_store& operator=(const py_store&) = delete;
  ~py_store() {
    py::gil_scoped_release nogil;
    shut_down();
  }

  // Waits for the operations in flight, destroys the store and stops the
  // I/O thread; completions nobody drained are dropped. Later calls raise.
  void close() {
    {
      py::gil_scoped_release nogil;
      shut_down();
    }
    queues_.clear();  // with the GIL: queued operations hold Python buffers
    default_queue_.reset();
    regions_.take_all();
  }
  bool closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }

  std::uint64_t add_segment(std::uint64_t size) {
    store_use use(*this);
    boost::system::error_code ec;
    segment_id id = 0;
    {
      py::gil_scoped_release nogil;
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
  void register_buffer(py::handle object_or_address, std::optional<std::uint64_t> size) {
    store_use use(*this);
    std::uintptr_t start = 0;
    region_table::region r;
    if (PyLong_Check(object_or_address.ptr())) {
      if (!size) throw py::type_error("register_buffer(address, size): the size is missing");
      start = to_address(object_or_address);
      r.size = static_cast<std::size_t>(*size);
    } else {
      auto pin = std::make_shared<held_buffer>();
      if (!pin->acquire(object_or_address.ptr(), /*writable=*/true))
        throw py::type_error("register_buffer needs a writable, C-contiguous buffer or (address, size)");
      if (size && *size != pin->size()) throw py::value_error("size differs from the buffer's");
      start = reinterpret_cast<std::uintptr_t>(pin->data());
      r.size = pin->size();
      r.pin = std::move(pin);
    }
    if (start == 0 || r.size == 0) raise_error(errc::invalid_argument);
    std::error_code ec;
    {
      py::gil_scoped_release nogil;
      ec = store_->register_buffer(asio::mutable_buffer(reinterpret_cast<void*>(start), r.size));
    }
    if (ec) raise_error(ec);
    const std::size_t size_registered = r.size;
    if (!regions_.insert(start, std::move(r))) {
      // The store refuses overlapping regions, so the table cannot hold
      // this start already (short of a race with an unregister of the same
      // region in another thread); undo and say so.
      {
        py::gil_scoped_release nogil;
        (void)store_->unregister_buffer(asio::mutable_buffer(reinterpret_cast<void*>(start), size_registered));
      }
      raise_error(errc::internal_error);
    }
  }

  void unregister_buffer(py::handle object_or_address) {
    store_use use(*this);
    std::uintptr_t start = 0;
    if (PyLong_Check(object_or_address.ptr())) {
      start = to_address(object_or_address);
    } else {
      held_buffer view;
      if (!view.acquire(object_or_address.ptr(), /*writable=*/false))
        throw py::type_error("unregister_buffer needs a buffer or an address");
      start = reinterpret_cast<std::uintptr_t>(view.data());
    }
    const std::optional<std::size_t> size = regions_.size_of(start);
    if (!size) raise_error(errc::invalid_argument);  // not registered here
    std::error_code ec;
    {
      py::gil_scoped_release nogil;
      ec = store_->unregister_buffer(asio::mutable_buffer(reinterpret_cast<void*>(start), *size));
    }
    if (ec) raise_error(ec);  // still registered, still in the table
    regions_.erase(start);     // its pin goes here, with the GIL (or with the last batch using it)
  }
  std::size_t registered_buffers() const { return regions_.size(); }

  // ---- operations: build, then run (wait) or submit (queue)
  std::shared_ptr<operation> put_op(py::handle keys, py::handle values, std::size_t replicas, bool allow_address) {
    auto op = std::make_shared<operation>();
    op->kind = op_kind::put;
    take_keys(keys, *op);
    op->put_opts.replicas = replicas;
    items v(values, "values must be a sequence");
    if (v.size() != op->keys.size()) raise_error(errc::invalid_argument);
    op->values.reserve(v.size());
    op->buffers.reserve(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      std::byte* data = nullptr;
      std::size_t size = 0;
      const errc e = resolve_memory(v[i], /*writable=*/false, allow_address, *op, regions_, data, size);
      if (e != errc::success) op->refuse(i, e);
      op->values.emplace_back(data, size);
    }
    op->compact();
    return op;
  }
  std::shared_ptr<operation> keys_op(op_kind kind, py::handle keys) {
    auto op = std::make_shared<operation>();
    op->kind = kind;
    if (kind != op_kind::remove_all) take_keys(keys, *op);
    return op;
  }
  std::shared_ptr<operation> get_into_op(py::handle keys, py::handle buffers, py::handle query_results, bool strict) {
    auto op = std::make_shared<operation>();
    op->kind = op_kind::get_into;
    take_keys(keys, *op);
    op->get_opts.strict = strict;
    if (!query_results.is_none()) take_query_results(query_results, *op);
    items b(buffers, "buffers must be a sequence");
    if (b.size() != op->keys.size() || (op->use_given && op->given.size() != op->keys.size()))
      raise_error(errc::invalid_argument);
    op->destinations.reserve(b.size());
    op->buffers.reserve(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
      std::byte* data = nullptr;
      std::size_t size = 0;
      const errc e = resolve_memory(b[i], /*writable=*/true, /*allow_address=*/true, *op, regions_, data, size);
      if (e != errc::success) op->refuse(i, e);
      op->destinations.emplace_back(data, size);
    }
    op->compact();
    return op;
  }
  std::shared_ptr<operation> get_owned_op(py::handle keys, py::handle query_results, bool strict) {
    auto op = std::make_shared<operation>();
    op->kind = op_kind::get_owned;
    take_keys(keys, *op);
    op->get_opts.strict = strict;
    if (!query_results.is_none()) {
      take_query_results(query_results, *op);
      if (op->given.size() != op->keys.size()) raise_error(errc::invalid_argument);
    }
    return op;
  }

  // Runs the operation with the GIL released; its result, or raises.
  py::object run(std::shared_ptr<operation> op) {
    begin(*op, nullptr);
    {
      py::gil_scoped_release nogil;
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
  std::uint64_t submit(std::shared_ptr<operation> op, std::shared_ptr<completion_queue> queue) {
    if (!queue) queue = own_queue();
    if (!owns(*queue)) throw py::value_error("the queue belongs to another store");
    begin(*op, queue.get());
    op->cancel = std::make_shared<cancel_state>();
    {
      std::lock_guard lock(mu_);
      cancellable_.emplace(op->ticket, op->cancel);
    }
    {
      py::gil_scoped_release nogil;  // the store may do the whole transfer in start()
      start(op);
    }
    return op->ticket;  // this reference is dropped here, with the GIL
  }

  // Asks a submitted operation to stop. It still completes (with cancelled,
  // or with its results if it was too far along), and only once nothing
  // can still write into its buffers. False if it had already completed.
  bool cancel(std::uint64_t ticket) {
    std::shared_ptr<cancel_state> c;
    {
      std::lock_guard lock(mu_);
      auto it = cancellable_.find(ticket);
      if (it == cancellable_.end()) return false;
      c = it->second;
    }
    // Emitted on the I/O thread, where the handler runs: serialised with it.
    asio::post(io_, [c] {
      if (!c->finished) c->signal.emit(asio::cancellation_type::all);
    });
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
    if (closed_) throw py::value_error("operation on a closed store");
    if (!default_queue_) default_queue_ = std::make_shared<completion_queue>();
    return default_queue_;
  }
  // A queue for one event loop (the asyncio variants make one per loop);
  // kept until the store is closed.
  std::shared_ptr<completion_queue> new_queue() {
    live();
    auto q = std::make_shared<completion_queue>();
    std::lock_guard lock(mu_);
    queues_.push_back(q);
    return q;
  }
  // For benchmarks/python_bench.py: the same batch_get_into, `iterations`
  // times in a row, awaited by a C++ coroutine on the I/O thread, as a C++
  // program would (no Python in the loop). Seconds it took.
  double cpp_get_into_loop(py::handle keys, py::handle buffers, py::handle query_results, std::size_t iterations) {
    auto op = get_into_op(keys, buffers, query_results, false);
    if (!op->refused.empty()) raise_error(errc::invalid_argument);
    begin(*op, nullptr);
    double elapsed = 0;
    boost::system::error_code failure;
    {
      py::gil_scoped_release nogil;
      asio::co_spawn(io_, get_into_loop(*store_, *op, iterations, elapsed, failure),
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
  py::dict counters() {
    std::string text;
    {
      store_use use(*this);
      text = store_->counters_json().dump();
    }
    return py::module_::import("json").attr("loads")(text);
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
  bool covers(py::handle address, std::uint64_t size) const {
    std::shared_ptr<held_buffer> ignored;
    return regions_.covers(to_address(address), static_cast<std::size_t>(size), ignored);
  }

 private:
  template <class T>
  struct completion {
    py_store* self;
    std::shared_ptr<operation> op;
    void operator()(boost::system::error_code ec, T value) {
      op->ec = ec;
      take(*op, std::move(value));
      self->complete(std::move(op));
    }
  };
  static void take(operation& op, std::vector<errc>&& v) { op.statuses = std::move(v); }
  static void take(operation& op, prefix_result&& v) { op.prefix = v; }
  static void take(operation& op, std::vector<query_result>&& v) { op.queried = std::move(v); }
  static void take(operation& op, std::vector<get_result>&& v) { op.got = std::move(v); }
  static void take(operation& op, std::vector<get_buffer_result>&& v) { op.owned = std::move(v); }
  static void take(operation& op, std::uint64_t&& v) { op.count = v; }

  static asio::awaitable<void> get_into_loop(Store& store, operation& op, std::size_t iterations, double& elapsed,
                                             boost::system::error_code& failure) {
    const auto started = clock_type::now();
    for (std::size_t i = 0; i < iterations && !failure; ++i) {
      std::vector<get_result> got;
      if (op.use_given)
        std::tie(failure, got) = co_await store.batch_get(op.sent(), std::span<const query_result>(op.given), op.destinations,
                                                          op.get_opts, asio::as_tuple(asio::deferred));
      else
        std::tie(failure, got) = co_await store.batch_get(op.sent(), op.destinations, op.get_opts, asio::as_tuple(asio::deferred));
      for (const auto& g : got)
        if (!g.ok() && !failure) failure = make_error_code(g.status);
    }
    elapsed = std::chrono::duration<double>(clock_type::now() - started).count();
  }

  void live() const {
    if (closed()) throw py::value_error("operation on a closed store");
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
    if (closed_) throw py::value_error("operation on a closed store");
    ++in_flight_;
  }

  void begin(operation& op, completion_queue* queue) {
    std::lock_guard lock(mu_);
    if (closed_) throw py::value_error("operation on a closed store");
    op.ticket = next_ticket_++;
    op.queue = queue;
    ++in_flight_;
    ++pending_;
  }

  // Without the GIL. Hands the operation to the store (or completes it at
  // once if every key was refused).
  void start(const std::shared_ptr<operation>& op) {
    if (!op->any_sent()) {
      complete(op);
      return;
    }
    try {
      switch (op->kind) {
        case op_kind::put:
          initiate<std::vector<errc>>(op, [&](auto&& h) { store_->batch_put(op->sent(), op->values, op->put_opts, std::move(h)); });
          break;
        case op_kind::exist:
          initiate<std::vector<errc>>(op, [&](auto&& h) { store_->batch_exist(op->sent(), std::move(h)); });
          break;
        case op_kind::remove:
          initiate<std::vector<errc>>(op, [&](auto&& h) { store_->batch_remove(op->sent(), std::move(h)); });
          break;
        case op_kind::exist_prefix:
          initiate<prefix_result>(op, [&](auto&& h) { store_->batch_exist_prefix(op->sent(), std::move(h)); });
          break;
        case op_kind::query:
          initiate<std::vector<query_result>>(op, [&](auto&& h) { store_->batch_query(op->sent(), std::move(h)); });
          break;
        case op_kind::get_into:
          initiate<std::vector<get_result>>(op, [&](auto&& h) {
            if (op->use_given)
              store_->batch_get(op->sent(), std::span<const query_result>(op->given), op->destinations, op->get_opts,
                                std::move(h));
            else
              store_->batch_get(op->sent(), op->destinations, op->get_opts, std::move(h));
          });
          break;
        case op_kind::get_owned:
          initiate<std::vector<get_buffer_result>>(op, [&](auto&& h) {
            if (op->use_given)
              store_->batch_get(op->sent(), std::span<const query_result>(op->given), op->get_opts, std::move(h));
            else
              store_->batch_get(op->sent(), op->get_opts, std::move(h));
          });
          break;
        case op_kind::remove_all:
          initiate<std::uint64_t>(op, [&](auto&& h) { store_->remove_all(std::move(h)); });
          break;
      }
    } catch (...) {
      // Not started: nothing will complete it. (The store reports its own
      // failures through handlers; this is out of memory and the like.)
      finish_outside(*op);
      throw;
    }
  }

  template <class T, class Initiate>
  void initiate(const std::shared_ptr<operation>& op, Initiate&& how) {
    auto handler = asio::bind_executor(inline_executor(io_), completion<T>{this, op});
    if (op->cancel)
      how(asio::bind_cancellation_slot(op->cancel->signal.slot(), std::move(handler)));
    else
      how(std::move(handler));
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
  // Without the GIL: waits for the operations in flight, destroys the store
  // and stops the I/O thread. The first caller tears down; a concurrent one
  // waits until that is done.
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
    work_.reset();
    io_.stop();
    if (runner_.joinable()) runner_.join();
    lock.lock();
    torn_down_ = true;
    idle_.notify_all();
  }

 private:

  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<Store> store_;
  std::thread runner_;
  region_table regions_;

  mutable std::mutex mu_;
  std::condition_variable idle_;
  std::size_t in_flight_ = 0;  // operations and direct uses not finished: close() waits for 0
  std::size_t pending_ = 0;    // operations whose result is not out yet
  bool closed_ = false;
  bool tearing_down_ = false;
  bool torn_down_ = false;
  std::uint64_t next_ticket_ = 1;
  std::map<std::uint64_t, std::shared_ptr<cancel_state>> cancellable_;
  std::shared_ptr<completion_queue> default_queue_;
  std::vector<std::shared_ptr<completion_queue>> queues_;
};

// ------------------------------------------------------------ the Python class
// The methods every store type has. `cls` is the pybind11 class of
// py_store<Store>; its constructor is bound by the caller.
template <class Store, class Class>
void bind_store_methods(Class& cls) {
  using self_t = py_store<Store>;
  using py::arg;
  auto none = py::none();
  cls.def("close", &self_t::close, "Wait for the operations in flight, then leave and stop the I/O thread.")
      .def_property_readonly("closed", &self_t::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](py::object self, py::args) { self.attr("close")(); })
      .def("add_segment", &self_t::add_segment, arg("size"), "Contribute `size` bytes of this process's memory.")
      .def_property_readonly("node", &self_t::node)
      .def("register_buffer", &self_t::register_buffer, arg("buffer"), arg("size") = none,
           "Register a writable buffer, or (address, size), with every lane.")
      .def("unregister_buffer", &self_t::unregister_buffer, arg("buffer"))
      .def_property_readonly("registered_buffers", &self_t::registered_buffers)
      .def("counters", &self_t::counters)
      .def("operations_in_flight", &self_t::in_flight)
      // Blocking calls (the GIL is released while they wait).
      .def("batch_put", [](self_t& s, py::handle k, py::handle v, std::size_t r) { return s.run(s.put_op(k, v, r, true)); },
           arg("keys"), arg("values"), arg("replicas") = 1)
      .def("batch_put_from", [](self_t& s, py::handle k, py::handle v, std::size_t r) { return s.run(s.put_op(k, v, r, true)); },
           arg("keys"), arg("sources"), arg("replicas") = 1)
      .def("batch_exist", [](self_t& s, py::handle k) { return s.run(s.keys_op(op_kind::exist, k)); }, arg("keys"))
      .def("batch_exist_prefix", [](self_t& s, py::handle k) { return s.run(s.keys_op(op_kind::exist_prefix, k)); },
           arg("keys"))
      .def("batch_query", [](self_t& s, py::handle k) { return s.run(s.keys_op(op_kind::query, k)); }, arg("keys"))
      .def("batch_get_into",
           [](self_t& s, py::handle k, py::handle b, py::handle q, bool strict) { return s.run(s.get_into_op(k, b, q, strict)); },
           arg("keys"), arg("buffers"), arg("query_results") = none, arg("strict") = false)
      .def("batch_get", [](self_t& s, py::handle k, py::handle q, bool strict) { return s.run(s.get_owned_op(k, q, strict)); },
           arg("keys"), arg("query_results") = none, arg("strict") = false)
      .def("batch_remove", [](self_t& s, py::handle k) { return s.run(s.keys_op(op_kind::remove, k)); }, arg("keys"))
      .def("remove_all", [](self_t& s) { return s.run(s.keys_op(op_kind::remove_all, py::none())); })
      // Submitted calls: a ticket now, a Completion in the queue later.
      .def("submit_batch_put",
           [](self_t& s, py::handle k, py::handle v, std::size_t r, std::shared_ptr<completion_queue> q) {
             return s.submit(s.put_op(k, v, r, true), std::move(q));
           },
           arg("keys"), arg("sources"), arg("replicas") = 1, arg("queue") = none)
      .def("submit_batch_exist",
           [](self_t& s, py::handle k, std::shared_ptr<completion_queue> q) { return s.submit(s.keys_op(op_kind::exist, k), std::move(q)); },
           arg("keys"), arg("queue") = none)
      .def("submit_batch_exist_prefix",
           [](self_t& s, py::handle k, std::shared_ptr<completion_queue> q) {
             return s.submit(s.keys_op(op_kind::exist_prefix, k), std::move(q));
           },
           arg("keys"), arg("queue") = none)
      .def("submit_batch_query",
           [](self_t& s, py::handle k, std::shared_ptr<completion_queue> q) { return s.submit(s.keys_op(op_kind::query, k), std::move(q)); },
           arg("keys"), arg("queue") = none)
      .def("submit_batch_get",
           [](self_t& s, py::handle k, py::handle b, py::handle qr, bool strict, std::shared_ptr<completion_queue> q) {
             if (b.is_none()) return s.submit(s.get_owned_op(k, qr, strict), std::move(q));
             return s.submit(s.get_into_op(k, b, qr, strict), std::move(q));
           },
           arg("keys"), arg("buffers") = none, arg("query_results") = none, arg("strict") = false, arg("queue") = none)
      .def("submit_batch_remove",
           [](self_t& s, py::handle k, std::shared_ptr<completion_queue> q) { return s.submit(s.keys_op(op_kind::remove, k), std::move(q)); },
           arg("keys"), arg("queue") = none)
      .def("submit_remove_all",
           [](self_t& s, std::shared_ptr<completion_queue> q) {
             return s.submit(s.keys_op(op_kind::remove_all, py::none()), std::move(q));
           },
           arg("queue") = none)
      .def("cancel", &self_t::cancel, arg("ticket"))
      .def("event_fd", [](self_t& s) { return s.own_queue()->fd(); })
      .def("drain_completions", [](self_t& s) { return drain_queue(*s.own_queue()); })
      .def("_new_queue", &self_t::new_queue)
      .def("_shut_down", [](self_t& s) {
        py::gil_scoped_release nogil;
        s.shut_down();
      })
      .def("_covers", &self_t::covers, arg("address"), arg("size"))
      .def("_cpp_get_into_loop", &self_t::cpp_get_into_loop, arg("keys"), arg("buffers"), arg("query_results"),
           arg("iterations"));
}

}  // namespace corokv::python
