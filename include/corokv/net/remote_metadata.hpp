#pragma once
// The metadata endpoint of a store whose metadata service runs in a
// corokv-master process: the same member functions as client::embedded_metadata,
// each one a request over one TCP connection.
//
// - Pipelining: any number of calls may be in flight on the connection;
//   frames queued while a write is running go out together in the next one.
//   Replies are matched by request id.
// - Reconnect: a lost connection is re-established after a wait that grows
//   exponentially, with jitter, while attempts keep failing (detail/
//   backoff.hpp); a connection the master closed without answering anything
//   (a follower, a fenced or deposed leader) counts as a failure too, so a
//   client never cycles connections faster than one per (1 -
//   reconnect_jitter) * reconnect_initial. A new leader seen in etcd ends
//   the wait at once.
//   Calls already sent on the lost connection fail with rpc_failed (whether
//   the master acted on them is unknown, so none is re-sent); calls not yet
//   sent wait for the next connection.
// - Rejoin: before any other traffic on a new connection, every node
//   registered through this endpoint registers again and remounts its
//   segments under their old ids (after a master restart the segments come
//   back unchanged; objects do not, the new master starts empty). The same
//   happens when a heartbeat answers node_unknown (the master declared the
//   node dead). A remount says so: the master holds such a segment back
//   from allocation until leases granted before it can no longer be in use.
// - Heartbeats every heartbeat_interval for each registered node.
// - Never a hang: a call unanswered after request_timeout, connected or
//   not, fails with errc::timeout.
// - Replicated masters: with a locator (net/master_locator.hpp) the master
//   is looked up before each connection, and a watch moves the connection
//   to a new leader as soon as one is known. Every reply carries its
//   master's term: one from a term older than the newest seen (a deposed
//   leader) is refused, and its connection dropped. Requests carry the
//   newest term seen, so that a deposed master learns it.
//
// All connection state lives on a strand of the executor given at
// construction; calls may come from any executor and complete on their own.
// The decisions about the connection (when to connect, how long to wait,
// which replies count, when to heartbeat, rejoin or drop) are the
// connection_lifecycle's; those about calls (which go out, which a reply or
// a lost connection or the clock completes) the call_table's; what is
// redone on a new connection the rejoin_list's. This file does the I/O and
// follows them.

#include <corokv/client/metadata_calls.hpp>
#include <corokv/client/metadata_endpoint.hpp>
#include <corokv/detail/backoff.hpp>
#include <corokv/error.hpp>
#include <corokv/net/address.hpp>
#include <corokv/net/call_table.hpp>
#include <corokv/net/connection_lifecycle.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/master_locator.hpp>
#include <corokv/net/rejoin_list.hpp>
#include <corokv/net/one_exchange.hpp>
#include <corokv/types.hpp>
#include <corokv/wire/messages.hpp>
#include <corokv/wire/operations.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv::net {

struct remote_metadata_options {
  // The master: an address, or a name looked up once, when the endpoint is
  // constructed (address.hpp); a name that does not resolve throws there.
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  duration request_timeout = std::chrono::seconds(5);
  duration connect_timeout = std::chrono::seconds(2);
  duration heartbeat_interval = std::chrono::seconds(1);  // well under the master's node_ttl
  duration reconnect_initial = std::chrono::milliseconds(20);  // the first wait before reconnecting
  duration reconnect_max = std::chrono::seconds(1);           // the longest, once failures persist
  double reconnect_jitter = 0.5;                              // each wait is drawn from [1 - jitter, 1] of its bound
  wire::limits limits;
  // Set: the master is whoever leads (host and port are not used).
  std::shared_ptr<master_locator> locator;
};

struct remote_metadata_stats {
  std::uint64_t connects = 0;
  std::uint64_t disconnects = 0;
  std::uint64_t calls = 0;
  std::uint64_t lost_in_flight = 0;  // failed with rpc_failed when their connection broke
  std::uint64_t timeouts = 0;
  std::uint64_t rejoins = 0;         // nodes registered again (new connection or node_unknown)
  std::uint64_t remount_failures = 0;
  std::uint64_t stale_replies = 0;   // replies from an older term than one seen: refused
  std::uint64_t leader_changes = 0;  // connections moved to a new leader
  std::uint64_t term = 0;            // the newest term seen
  std::uint64_t backoffs = 0;        // waits before reconnecting, or before asking etcd again, after a failure
  duration backoff_total{};          // their sum
  duration backoff_ceiling{};        // the longest the next reconnect wait may be
};

namespace detail {

// A call's outcome: success with the reply's payload, or why not.
using reply = std::pair<errc, std::vector<std::byte>>;

// Where a reply goes: the awaiting caller's handler, completed on the
// caller's own executor. Erased here, where the handler's type is still
// known, so its associated executor is looked up exactly.
struct reply_sink {
  virtual ~reply_sink() = default;
  virtual void deliver(reply r) = 0;
};
using reply_handler = std::unique_ptr<reply_sink>;

template <class Handler, class Fallback>
struct handler_sink final : reply_sink {
  handler_sink(Handler h, Fallback f) : handler(std::move(h)), fallback(std::move(f)) {}
  void deliver(reply r) override {
    auto ex = boost::asio::get_associated_executor(handler, fallback);
    boost::asio::post(ex, boost::asio::append(std::move(handler), std::move(r)));
  }
  Handler handler;
  Fallback fallback;
};

struct ignore_sink final : reply_sink {
  void deliver(reply) override {}
};

class metadata_session;

// A session parks each caller's handler in its call table until the reply
// comes. Parked handlers are outside the execution context's queues, so the
// context's shutdown would not destroy them as it destroys Asio's own
// pending operations; and a parked handler owns its caller's coroutine
// frame, which may own the session (through the store): a cycle that
// outlives the context. This service closes the gap: when the context shuts
// down, every live session destroys its parked handlers, uninvoked, as
// Asio does with its own.
class session_registry final : public boost::asio::execution_context::service {
 public:
  using key_type = session_registry;
  static inline boost::asio::execution_context::id id;

  explicit session_registry(boost::asio::execution_context& context) : boost::asio::execution_context::service(context) {}

  void add(std::weak_ptr<metadata_session> session) {
    std::lock_guard lock(mu_);
    std::erase_if(sessions_, [](const auto& w) { return w.expired(); });
    sessions_.push_back(std::move(session));
  }

 private:
  void shutdown() override;

  std::mutex mu_;
  std::vector<std::weak_ptr<metadata_session>> sessions_;
};

class metadata_session : public std::enable_shared_from_this<metadata_session> {
 public:
  metadata_session(boost::asio::any_io_executor ex, remote_metadata_options options)
      : strand_(boost::asio::make_strand(ex)),
        options_(std::move(options)),
        wake_(strand_),
        tick_(strand_),
        lifecycle_(lifecycle_options(options_), backoff_seed()) {
    if (options_.locator) return;  // looked up before each connection
    boost::system::error_code ec;
    master_ = resolve_now(options_.host, options_.port, ec);
    if (ec || master_.empty())
      throw boost::system::system_error(ec ? ec : make_error_code(boost::asio::error::host_not_found),
                                        "corokv: cannot resolve the master's host " + options_.host);
  }

  void start() {
    auto self = shared_from_this();
    boost::asio::use_service<session_registry>(boost::asio::query(strand_.get_inner_executor(), boost::asio::execution::context)).add(self);
    // Before the strand runs anything of this session's: the only access
    // from outside it.
    const connection_lifecycle::action first = lifecycle_.start(clock_type::now());
    boost::asio::co_spawn(strand_, [self, first]() { return self->run(first); }, boost::asio::detached);
    boost::asio::co_spawn(strand_, [self]() { return self->ticker(); }, boost::asio::detached);
    if (options_.locator) boost::asio::co_spawn(strand_, [self]() { return self->follow_leader(); }, boost::asio::detached);
  }

  // Sends one request and awaits its reply, from any executor. `control`
  // calls (rejoin) may go out before the connection is ready for others.
  template <class Message>
  boost::asio::awaitable<reply> call(wire::message_type type, const Message& message, bool control = false) {
    std::vector<std::byte> frame;
    if (append_frame(type, false, 0, message, frame, options_.limits) != errc::success)
      co_return reply{errc::invalid_argument, {}};
    // Named, not a temporary inside the co_await: GCC 12 destroys such a
    // temporary twice, which would release `self` once too often.
    auto initiation = [self = shared_from_this(), type, control](auto handler, std::vector<std::byte> bytes) {
      reply_handler h = std::make_unique<handler_sink<decltype(handler), decltype(self->strand_)>>(std::move(handler),
                                                                                                self->strand_);
      boost::asio::post(self->strand_, [self, type, control, frame = std::move(bytes), h = std::move(h)]() mutable {
        self->enqueue(type, std::move(frame), std::move(h), control);
      });
    };
    co_return co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void(reply)>(initiation, boost::asio::use_awaitable,
                                                                                       std::move(frame));
  }

  // One request of operation Op (wire/operations.hpp) and its response; a
  // call that failed as a whole, or whose reply does not decode as Op's
  // response, answers as a response with that status.
  template <class Op>
  boost::asio::awaitable<typename Op::response> request(const typename Op::request& message, bool control = false) {
    const reply r = co_await call(Op::type, message, control);
    co_return decoded<Op>(r);
  }
  template <class Op>
  typename Op::response decoded(const reply& r) const {
    typename Op::response out;
    if (const errc e = decode_reply(r, out); e != errc::success) {
      out = {};
      out.status = e;
    }
    return out;
  }
  // The reply's payload decoded as the response it must be; a payload that
  // does not decode is a protocol_error of this call.
  template <class Response>
  errc decode_reply(const reply& r, Response& out) const {
    if (r.first != errc::success) return r.first;
    return wire::decode(r.second, out, options_.limits);
  }

  // Sends without waiting for the outcome (a leaving node's unregister).
  template <class Message>
  void send_and_forget(wire::message_type type, const Message& message) {
    std::vector<std::byte> frame;
    if (append_frame(type, false, 0, message, frame, options_.limits) != errc::success) return;
    boost::asio::post(strand_, [self = shared_from_this(), type, frame = std::move(frame)]() mutable {
      self->enqueue(type, std::move(frame), std::make_unique<ignore_sink>(), false);
    });
  }

  // What to redo on a new connection or after node_unknown.
  rejoin_list& rejoins() noexcept { return rejoins_; }

  // Ends the session once what is queued went out (at most 500 ms): the
  // unregister of a store being destroyed still reaches the master.
  void shutdown() {
    boost::asio::co_spawn(strand_, [self = shared_from_this()]() { return self->close_when_drained(); }, boost::asio::detached);
  }

  // The execution context is shutting down (no thread runs it): parked
  // handlers are destroyed, not invoked. Destroying one may release the
  // last other owner of this session, hence the local owner. The stop's
  // drop is left to the context: it destroys the socket with its
  // operations, and nothing may be completed now.
  void abandon_parked_handlers() {
    auto self = shared_from_this();
    (void)lifecycle_.stop();
    calls_.abandon_all();
  }

  remote_metadata_stats stats() const {
    std::lock_guard lock(stats_mu_);
    return stats_;
  }
  bool ready() const noexcept { return ready_flag_.load(std::memory_order_acquire); }

 private:
  using act = connection_lifecycle::act;

  template <class F>
  void count(F f) {
    std::lock_guard lock(stats_mu_);
    f(stats_);
  }
  // The lifecycle's counts, copied where other threads may read them.
  void count_lifecycle() {
    count([&](auto& s) {
      s.term = lifecycle_.newest_term();
      s.stale_replies = lifecycle_.stale_replies();
      s.leader_changes = lifecycle_.leader_changes();
      s.backoffs = lifecycle_.backoffs();
      s.backoff_total = lifecycle_.backoff_total();
    });
  }

  void enqueue(wire::message_type type, std::vector<std::byte> frame, reply_handler handler, bool control) {
    if (lifecycle_.stopped()) {
      complete(std::move(handler), reply{errc::cancelled, {}});
      return;
    }
    wire::stamp_term(frame, lifecycle_.newest_term());
    calls_.add(type, std::move(frame), std::move(handler), clock_type::now() + options_.request_timeout, control);
    count([](auto& s) { ++s.calls; });
    pump();
  }

  // Completes a caller's operation on its own executor.
  static void complete(reply_handler handler, reply r) { handler->deliver(std::move(r)); }

  // Writes everything that may go out now in one gathered write.
  void pump() {
    if (!socket_ || writing_) return;
    write_buffer_.clear();
    if (calls_.take_sendable(lifecycle_.ready(), write_buffer_) == 0) return;
    writing_ = true;
    boost::asio::async_write(*socket_, boost::asio::buffer(write_buffer_), transfer_all_at_once{},
                      boost::asio::bind_executor(strand_, [self = shared_from_this(), gen = generation_](
                                                       boost::system::error_code ec, std::size_t) {
                        self->writing_ = false;
                        if (gen != self->generation_) return;
                        if (ec)
                          self->lose(gen);
                        else
                          self->pump();
                      }));
  }

  // The connection of generation `gen` broke.
  void lose(std::uint64_t gen) {
    if (gen != generation_ || !socket_) return;
    follow(lifecycle_.lost());
  }

  // Follows an action the lifecycle decided outside the run loop: a drop,
  // or the end of a wait to reconnect.
  void follow(connection_lifecycle::action a) {
    if (a.what == act::drop) drop();
    if (a.what == act::connect) wake_.cancel();  // run() is backing off: connect now
  }

  // Closes the connection: what was sent on it fails; run() takes up what
  // comes next.
  void drop() {
    if (!socket_) return;
    boost::system::error_code ignored;
    socket_->close(ignored);
    socket_.reset();
    ready_flag_.store(false, std::memory_order_release);
    ++generation_;
    const std::uint64_t lost =
        calls_.fail_sent([](reply_handler h) { complete(std::move(h), reply{errc::rpc_failed, {}}); });
    count([&](auto& s) {
      ++s.disconnects;
      s.lost_in_flight += lost;
    });
    wake_.cancel();
  }

  boost::asio::awaitable<void> reader(std::shared_ptr<tcp::socket> socket, std::uint64_t gen) {
    wire::frame_header h;
    std::vector<std::byte> payload;
    for (;;) {
      const frame_status got = co_await read_frame(*socket, options_.limits, /*response=*/true, h, payload);
      if (gen != generation_) co_return;
      if (got != frame_status::ok) break;
      const std::uint64_t term_before = lifecycle_.newest_term();
      const connection_lifecycle::action verdict = lifecycle_.reply(h.term);
      if (verdict.what == act::drop || lifecycle_.newest_term() != term_before) count_lifecycle();
      if (verdict.what == act::drop) {  // a deposed master: nothing it says counts
        follow(verdict);
        co_return;
      }
      auto match = calls_.on_reply(h);
      if (match.kind == call_table<reply_handler>::reply_kind::mismatched) break;  // the stream is broken
      lifecycle_.answered();
      if (match.kind == call_table<reply_handler>::reply_kind::stale) continue;    // its caller timed out already
      complete(std::move(*match.handler), reply{errc::success, std::move(payload)});
      payload = {};
    }
    lose(gen);
  }

  boost::asio::awaitable<errc> connect(std::shared_ptr<tcp::socket> socket) {
    if (options_.locator) {
      auto [e, where] = co_await options_.locator->locate();
      if (e != errc::success || !lifecycle_.located(where.term)) co_return errc::rpc_failed;
      count_lifecycle();
      boost::system::error_code ec;
      master_ = resolve_now(where.host, where.port, ec);
      if (ec) co_return errc::rpc_failed;
    }
    if (master_.empty()) co_return errc::rpc_failed;
    co_return co_await connect_within(socket, master_, options_.connect_timeout) ? errc::success : errc::rpc_failed;
  }

  // Follows the lifecycle's actions from `next` (start()'s) until stopped.
  boost::asio::awaitable<void> run(connection_lifecycle::action next) {
    while (!lifecycle_.stopped()) {
      if (next.what == act::back_off) {
        count_lifecycle();
        count([&](auto& s) { s.backoff_ceiling = lifecycle_.backoff_ceiling(); });
        wake_.expires_after(next.wait);  // a new leader named in etcd ends it early (follow_leader)
        co_await wake_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        next = lifecycle_.wait_over();
        continue;
      }
      if (next.what != act::connect) break;  // none: the lifecycle stopped
      auto socket = std::make_shared<tcp::socket>(strand_);
      if (co_await connect(socket) != errc::success) {
        next = lifecycle_.connect_failed();
        continue;
      }
      if (lifecycle_.stopped()) break;
      socket_ = socket;
      const std::uint64_t gen = ++generation_;
      count([](auto& s) { ++s.connects; });
      boost::asio::co_spawn(strand_, reader(socket, gen), boost::asio::detached);
      if (lifecycle_.connected().what == act::rejoin) {
        const std::vector<node_id> nodes = rejoins_.nodes();  // named: it lives across the awaits
        for (node_id node : nodes) co_await rejoin(node);
      }
      if (gen == generation_ && lifecycle_.rejoined().what == act::send) {
        ready_flag_.store(true, std::memory_order_release);
        pump();
      }
      while (gen == generation_ && !lifecycle_.stopped()) {
        wake_.expires_at(clock_type::time_point::max());
        co_await wake_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      }
      next = lifecycle_.after_drop();
    }
  }

  static connection_lifecycle_options lifecycle_options(const remote_metadata_options& o) {
    const corokv::detail::backoff_options reconnect{o.reconnect_initial, o.reconnect_max, o.reconnect_jitter};
    return {o.heartbeat_interval, reconnect, reconnect};
  }
  // Different in every session and process, so that clients that lost the
  // same master do not come back in step.
  std::uint64_t backoff_seed() const {
    return reinterpret_cast<std::uintptr_t>(this) ^
           static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }

  // Registers the node again and remounts its segments under their ids.
  boost::asio::awaitable<void> rejoin(node_id node) {
    const std::vector<wire::mount_request> mounts = rejoins_.remounts_of(node);
    count([](auto& s) { ++s.rejoins; });
    using registration = wire::ops::register_node;
    const registration::request m = registration::to_request(node);
    // Only a call that failed as a whole skips the remounts.
    if (const reply registered = co_await call(registration::type, m, true); registered.first != errc::success)
      co_return;
    for (const auto& mount : mounts) {
      const wire::mount_response r = co_await request<wire::ops::mount_segment>(mount, true);
      if (r.status != errc::success) count([](auto& s) { ++s.remount_failures; });
    }
  }

  // Times out calls and sends heartbeats.
  boost::asio::awaitable<void> ticker() {
    const duration period = std::min<duration>(options_.heartbeat_interval, std::chrono::milliseconds(50));
    while (!lifecycle_.stopped()) {
      tick_.expires_after(period);
      co_await tick_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (lifecycle_.stopped()) break;
      const auto now = clock_type::now();
      const std::uint64_t expired =
          calls_.expire(now, [](reply_handler h) { complete(std::move(h), reply{errc::timeout, {}}); });
      if (expired) count([&](auto& s) { s.timeouts += expired; });
      if (lifecycle_.tick(now).what == act::heartbeat)
        for (node_id node : rejoins_.nodes()) boost::asio::co_spawn(strand_, heartbeat(node), boost::asio::detached);
    }
  }

  boost::asio::awaitable<void> heartbeat(node_id node) {
    const wire::status_response r = co_await request<wire::ops::heartbeat>(wire::ops::heartbeat::to_request(node));
    if (lifecycle_.heartbeat_answered(r.status).what == act::rejoin) co_await rejoin(node);
  }

  // Watches for a new leader; the lifecycle decides whether the connection
  // moves to it (calls sent on the old one fail with rpc_failed, as with
  // any lost connection) or a wait to reconnect ends.
  boost::asio::awaitable<void> follow_leader() {
    boost::asio::steady_timer pause(strand_);
    while (!lifecycle_.stopped()) {
      auto [e, where] = co_await options_.locator->next_leader(lifecycle_.watch_beyond(), std::chrono::seconds(10));
      if (lifecycle_.stopped()) break;
      if (e == errc::success) {
        const connection_lifecycle::action a = lifecycle_.leader_changed(where.term);
        count_lifecycle();
        follow(a);
      } else if (e == errc::timeout) {
        lifecycle_.leader_unchanged();
      } else {
        const connection_lifecycle::action wait = lifecycle_.leader_watch_failed();  // etcd unreachable
        count_lifecycle();
        pause.expires_after(wait.wait);
        co_await pause.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      }
    }
  }

  boost::asio::awaitable<void> close_when_drained() {
    boost::asio::steady_timer pause(strand_);
    const auto until = clock_type::now() + std::chrono::milliseconds(500);
    while (socket_ && lifecycle_.ready() && !calls_.empty() && clock_type::now() < until) {
      pause.expires_after(std::chrono::milliseconds(2));
      co_await pause.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    const connection_lifecycle::action last = lifecycle_.stop();
    if (options_.locator) options_.locator->cancel();  // ends follow_leader's watch
    follow(last);
    calls_.fail_all([](reply_handler h) { complete(std::move(h), reply{errc::cancelled, {}}); });
    tick_.cancel();
    wake_.cancel();
  }

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  remote_metadata_options options_;
  std::vector<tcp::endpoint> master_;  // options_.host resolved once, or the located leader
  // Strand state.
  std::shared_ptr<tcp::socket> socket_;
  std::uint64_t generation_ = 0;  // counts connections and drops: an I/O completion of an older one is ignored
  bool writing_ = false;
  call_table<reply_handler> calls_;
  std::vector<std::byte> write_buffer_;
  boost::asio::steady_timer wake_, tick_;
  connection_lifecycle lifecycle_;  // every decision about the connection
  std::atomic<bool> ready_flag_{false};
  // Any thread.
  rejoin_list rejoins_;
  mutable std::mutex stats_mu_;
  remote_metadata_stats stats_;
};

inline void session_registry::shutdown() {
  std::vector<std::weak_ptr<metadata_session>> sessions;
  {
    std::lock_guard lock(mu_);
    sessions.swap(sessions_);
  }
  for (auto& weak : sessions)
    if (auto session = weak.lock()) session->abandon_parked_handlers();
}

}  // namespace detail

class remote_metadata : public client::metadata_calls<remote_metadata> {
 public:
  remote_metadata(boost::asio::any_io_executor ex, remote_metadata_options options)
      : session_(std::make_shared<detail::metadata_session>(std::move(ex), std::move(options))) {
    session_->start();
  }
  remote_metadata(remote_metadata&&) noexcept = default;
  remote_metadata& operator=(remote_metadata&&) = delete;
  ~remote_metadata() {
    if (session_) session_->shutdown();
  }

  template <class T>
  using result = boost::asio::awaitable<T>;

  remote_metadata_stats stats() const { return session_->stats(); }
  // Whether the connection is up and this endpoint's nodes have rejoined.
  bool ready() const noexcept { return session_->ready(); }

  // Any operation (wire/operations.hpp), as one request to the master; the
  // named calls (metadata_calls.hpp) forward to it. A call answered per
  // item takes its results from the reply, which must answer every item
  // sent.
  template <class Op, class Out, class... Args>
    requires wire::per_item_operation<Op>
  result<std::error_code> call(std::span<Out> out, Args... args) {
    const typename Op::request m = Op::to_request(std::move(args)...);
    auto reply = co_await session_->call(Op::type, m);
    typename Op::response r;
    errc e = session_->decode_reply(reply, r);
    if (e == errc::success) e = r.status;
    if (e == errc::success && r.results.size() != out.size()) e = errc::protocol_error;
    if (e != errc::success) co_return std::error_code(e);
    std::move(r.results.begin(), r.results.end(), out.begin());
    co_return std::error_code{};
  }
  template <class Op, class... Args>
    requires(!wire::per_item_operation<Op>)
  result<wire::call_answer_t<Op>> call(Args... args) {
    const typename Op::request m = Op::to_request(std::move(args)...);
    co_return co_await exchange<Op>(session_, m);
  }

  // Remembered, to register again on a new connection (rejoin_list.hpp).
  result<std::error_code> register_node(node_id node) {
    session_->rejoins().remember_node(node);
    co_return co_await call<wire::ops::register_node>(node);
  }

  // Remembered with its node, to mount again under the id it got.
  result<std::pair<std::error_code, segment_id>> mount(node_id node, std::uint64_t size, segment_endpoints where,
                                                       segment_id requested,
                                                       storage_tier tier = storage_tier::memory, bool remount = false) {
    using op = wire::ops::mount_segment;
    session_->rejoins().remember_node(node);
    op::request m = op::to_request(node, size, std::move(where), requested, tier, remount);
    const auto answer = co_await exchange<op>(session_, m);
    if (!answer.first) {
      m.requested = answer.second;
      session_->rejoins().remember_mount(m);
    }
    co_return answer;
  }

  // Unmounts a segment this endpoint mounted (a disk tier that failed to
  // start): it is not mounted again on a new connection.
  result<std::error_code> unmount(segment_id segment) {
    session_->rejoins().forget_mount(segment);
    co_return co_await call<wire::ops::unmount_segment>(segment);
  }

  // list_segments as a function object that shares the connection (and
  // outlives this handle's moves), for a transport's segment directory.
  std::function<boost::asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>>()> segment_lister() {
    return [session = session_]() -> boost::asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>> {
      const wire::list_segments_request m;
      co_return co_await exchange<wire::ops::list_segments>(session, m);
    };
  }

  // For a store's destructor: the node leaves (its segments are unmounted and
  // its pending puts revoked) if the connection can still say so; otherwise
  // the master declares it dead after node_ttl.
  void leave(node_id node) noexcept {
    session_->rejoins().forget_node(node);
    session_->send_and_forget(wire::ops::unregister_node::type, wire::ops::unregister_node::to_request(node));
  }

 private:
  // One request of an operation not answered per item, and its answer; a
  // call that failed as a whole answers as a response with that status.
  template <class Op>
  static result<wire::call_answer_t<Op>> exchange(std::shared_ptr<detail::metadata_session> session,
                                                  const typename Op::request& m) {
    typename Op::response r = co_await session->request<Op>(m);
    co_return Op::answer(std::move(r));
  }

  std::shared_ptr<detail::metadata_session> session_;
};

static_assert(client::metadata_endpoint<remote_metadata>);
static_assert(client::tiering_endpoint<remote_metadata>);

}  // namespace corokv::net
