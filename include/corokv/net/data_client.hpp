#pragma once
// The client side of the TCP data plane: moves one batch of ranges to or
// from one node's data server in one request. Bytes go straight between the
// socket and the caller's buffers (a scatter read, a gathered write), never
// through an intermediate copy.
//
// Connections are pooled per peer: a batch takes an idle connection or opens
// one, and gives it back when the exchange completed cleanly. A connection on
// which anything went wrong (an I/O error, a reply that does not answer the
// request, io_timeout) is closed, and every item of that batch reports
// transfer_failed, so the store can try another replica; the error never
// escapes as an exception and never hangs.
//
// Cancellation (terminal, through the awaiting coroutine's cancellation
// state) stops a batch at its next step: before an exchange starts, or,
// for a read, while it waits on its connection, which is then closed. A
// write that has begun to send is finished, never abandoned: the peer would
// go on writing the bytes it had received into ranges that the store gives
// back, and may give to another object, as soon as this call returns. The
// items not answered report `cancelled`; an exchange answered in full keeps
// its answers. It is never thrown, and nothing is written into a
// destination once the call has returned.

#include <corokv/detail/guarded_spawn.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/one_exchange.hpp>
#include <corokv/net/socket_deadline.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace corokv::net {

// A node's data server. An address, never a name: see address.hpp.
using data_peer = tcp::endpoint;

struct data_client_options {
  duration io_timeout = std::chrono::seconds(10);  // one whole exchange
  std::size_t idle_per_peer = 8;
  wire::limits limits;
};

class data_client {
 public:
  explicit data_client(data_client_options options = {}) : options_(options) {}

  // The peer is taken by value, as by every coroutine here: the operation
  // may start after the caller's argument is gone (co_spawn, deferred).

  // Reads every request's range from `peer` into its destination. Per item:
  // success, segment_not_found (the server refused the range),
  // transfer_failed (the exchange failed) or cancelled. A request names at most
  // limits.max_batch ranges, the most a server accepts in one frame; more
  // take several exchanges, one after another.
  boost::asio::awaitable<void> read(data_peer peer, std::span<const memory::read_request> requests, std::span<errc> status) {
    return in_frames(peer, requests, status, once_sent::may_abandon, &data_client::read_over);
  }

  // Writes every request's source bytes into its range on `peer`.
  boost::asio::awaitable<void> write(data_peer peer, std::span<const memory::write_request> requests, std::span<errc> status) {
    for (auto& r : requests)
      if (r.source.size() != r.replica.length) {
        std::fill(status.begin(), status.end(), errc::size_mismatch);
        co_return;
      }
    co_await in_frames(peer, requests, status, once_sent::finish, &data_client::write_over);
  }

  // Closes idle connections (those in use close when their batch ends).
  void close_idle() {
    std::lock_guard lock(mu_);
    idle_.clear();
  }

 private:
  using socket_ptr = std::shared_ptr<tcp::socket>;

  std::size_t per_frame() const { return std::max<std::size_t>(1, options_.limits.max_batch); }

  // An exchange runs on a strand of its own, which its deadline's timer
  // shares: the timer can close the socket only between two steps of the
  // exchange, never while one runs on another thread of a pool. It is
  // spawned there through corokv::detail::run_on, which a cancellation
  // reaches safely (a bare co_spawn is not safe to cancel with Asio 1.81:
  // see detail/guarded_spawn.hpp). Coroutines and lambdas are named before
  // the co_await that takes them: GCC 12 destroys temporaries inside one
  // twice.
  static boost::asio::awaitable<void> on_own_strand(boost::asio::awaitable<void> exchange) {
    auto ex = co_await boost::asio::this_coro::executor;
    auto on_strand = corokv::detail::run_on(boost::asio::make_strand(ex), std::move(exchange));
    co_await std::move(on_strand);
  }

  static bool cancelled(const boost::asio::cancellation_state& state) noexcept {
    return state.cancelled() != boost::asio::cancellation_type::none;
  }

  enum class outcome {
    done,         // answered in full: the connection can be reused
    failed,       // anything else: the connection is closed
    peer_closed,  // the peer had closed the connection before answering anything
  };

  // One request and its answer on a connection to `peer`, bounded by
  // io_timeout. A pooled connection the peer closed while it sat idle (the
  // node restarted on the same port) fails before any answer; the exchange
  // is then made once more on a new connection. Both kinds are idempotent:
  // the same bytes from, or into, the same ranges. A cancellation stops it
  // before its request is sent and, if `sent` allows, aborts a step waiting
  // on the connection afterwards (which is then closed): `status` is then
  // `cancelled`, unless the exchange was answered in full.
  enum class once_sent { may_abandon, finish };

  // The requests in frames of at most limits.max_batch ranges, one exchange
  // after another, each carried by `over` (read_over or write_over); the
  // frames not started when the caller cancels answer cancelled.
  template <class Request>
  using carrier = boost::asio::awaitable<outcome> (data_client::*)(tcp::socket&, std::span<const Request>, std::span<errc>);
  template <class Request>
  boost::asio::awaitable<void> in_frames(data_peer peer, std::span<const Request> requests, std::span<errc> status,
                                         once_sent sent, carrier<Request> over) {
    std::fill(status.begin(), status.end(), errc::transfer_failed);
    const boost::asio::cancellation_state state = co_await boost::asio::this_coro::cancellation_state;
    for (std::size_t at = 0; at < requests.size(); at += per_frame()) {
      if (cancelled(state)) {
        std::fill(status.begin() + static_cast<std::ptrdiff_t>(at), status.end(), errc::cancelled);
        co_return;
      }
      const std::size_t n = std::min(per_frame(), requests.size() - at);
      const std::span<errc> out = status.subspan(at, n);
      auto body = [this, part = requests.subspan(at, n), out, over](tcp::socket& socket) { return (this->*over)(socket, part, out); };
      auto one = exchange(peer, out, sent, std::move(body));
      auto on_strand = on_own_strand(std::move(one));
      co_await std::move(on_strand);
    }
  }
  template <class Body>
  boost::asio::awaitable<void> exchange(data_peer peer, std::span<errc> status, once_sent sent, Body body) {
    // Reported per item, never thrown (an awaiting store handles it step by step).
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    boost::asio::cancellation_state state = co_await boost::asio::this_coro::cancellation_state;
    auto ex = co_await boost::asio::this_coro::executor;
    for (bool may_pool = true; !cancelled(state); may_pool = false) {
      auto [socket, pooled] = co_await acquire(peer, may_pool);
      if (!socket) {
        if (cancelled(state)) break;
        co_return;
      }
      if (cancelled(state)) {
        finish(peer, std::move(socket), true);  // connected, nothing sent: still clean
        break;
      }
      if (sent == once_sent::finish) {
        // From here on this exchange no longer hears cancellation.
        co_await boost::asio::this_coro::reset_cancellation_state(boost::asio::disable_cancellation());
        state = co_await boost::asio::this_coro::cancellation_state;
      }
      socket_deadline deadline(ex, socket, options_.io_timeout);
      const outcome o = co_await body(*socket);
      deadline.disarm();
      finish(peer, std::move(socket), o == outcome::done && !deadline.fired());
      if (o == outcome::done) co_return;
      if (o != outcome::peer_closed || !pooled || deadline.fired()) {
        if (cancelled(state)) break;
        co_return;
      }
    }
    std::fill(status.begin(), status.end(), errc::cancelled);
  }

  // The first failure of an exchange: before the peer answered anything,
  // or later.
  static outcome failure(bool before_answer) { return before_answer ? outcome::peer_closed : outcome::failed; }

  // A data request's frame: header and item table, one item per range (the
  // bytes of a write follow it separately). False if it cannot be encoded.
  template <class Message, class Request>
  bool request_frame(wire::message_type type, std::uint64_t id, std::span<const Request> requests,
                     std::vector<std::byte>& frame) const {
    Message request;
    request.items.reserve(requests.size());
    for (auto& r : requests) request.items.push_back({r.replica.segment, r.replica.offset, r.replica.length, no_version});
    return append_frame(type, false, id, request, frame, options_.limits) == errc::success;
  }

  boost::asio::awaitable<outcome> read_over(tcp::socket& socket, std::span<const memory::read_request> requests, std::span<errc> status) {
    std::vector<std::byte> frame;
    const std::uint64_t id = ++next_id_;
    if (!request_frame<wire::data_read_request>(wire::message_type::data_read, id, requests, frame))
      co_return outcome::failed;
    const boost::asio::const_buffer request = boost::asio::buffer(frame);
    auto [wec, w] = co_await write_fully(socket, std::span(&request, 1));
    if (wec) co_return failure(true);
    wire::frame_header h;
    std::vector<std::byte> reply;
    const frame_status got = co_await read_frame_of_size(socket, options_.limits, true,
                                                         wire::data_read_response_size(requests.size()), h, reply);
    if (got != frame_status::ok) co_return failure(got == frame_status::ended);
    wire::data_read_response response;
    if (h.type != wire::message_type::data_read || h.request_id != id ||
        wire::decode_table(std::span(reply).subspan(wire::header_size), response, options_.limits) != errc::success ||
        response.results.size() != requests.size() || response.status != errc::success)
      co_return outcome::failed;
    // The reply must announce exactly the lengths asked for: a peer cannot
    // make us write past a caller's buffer.
    std::vector<boost::asio::mutable_buffer> scatter;
    scatter.reserve(requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (response.results[i] != errc::success) continue;
      if (response.lengths[i] != requests[i].replica.length ||
          requests[i].destination.size() < requests[i].replica.length)
        co_return outcome::failed;
      append_coalesced(scatter, boost::asio::mutable_buffer(requests[i].destination.data(), requests[i].replica.length));
    }
    auto [rec, n] = co_await read_fully(socket, scatter);
    if (rec) co_return outcome::failed;
    std::copy(response.results.begin(), response.results.end(), status.begin());
    co_return outcome::done;
  }

  boost::asio::awaitable<outcome> write_over(tcp::socket& socket, std::span<const memory::write_request> requests,
                                      std::span<errc> status) {
    std::vector<std::byte> frame;
    const std::uint64_t id = ++next_id_;
    if (!request_frame<wire::data_write_request>(wire::message_type::data_write, id, requests, frame))
      co_return outcome::failed;
    std::vector<boost::asio::const_buffer> gather;
    gather.reserve(requests.size() + 1);
    gather.push_back(boost::asio::buffer(frame));
    for (auto& r : requests) append_coalesced(gather, r.source);
    auto [wec, w] = co_await write_fully(socket, gather);
    if (wec) co_return failure(true);
    wire::frame_header h;
    std::vector<std::byte> reply;
    const frame_status got = co_await read_frame_of_size(socket, options_.limits, true,
                                                         wire::data_write_response_size(requests.size()), h, reply);
    if (got != frame_status::ok) co_return failure(got == frame_status::ended);
    wire::statuses_response response;
    if (h.type != wire::message_type::data_write || h.request_id != id ||
        wire::decode(std::span(reply).subspan(wire::header_size), response, options_.limits) != errc::success ||
        response.status != errc::success ||
        response.results.size() != requests.size())
      co_return outcome::failed;
    std::copy(response.results.begin(), response.results.end(), status.begin());
    co_return outcome::done;
  }

  // An idle connection to `peer` (if `may_pool`), or a new one connected
  // within io_timeout, and whether it came from the pool; a null socket if
  // none can be had.
  boost::asio::awaitable<std::pair<socket_ptr, bool>> acquire(data_peer peer, bool may_pool) {
    if (may_pool) {
      std::lock_guard lock(mu_);
      auto& idle = idle_[peer];
      if (!idle.empty()) {
        socket_ptr s = std::move(idle.back());
        idle.pop_back();
        co_return std::pair{std::move(s), true};
      }
    }
    auto ex = co_await boost::asio::this_coro::executor;
    auto socket = std::make_shared<tcp::socket>(ex);
    if (!co_await connect_within(socket, peer, options_.io_timeout)) co_return std::pair{socket_ptr{}, false};
    co_return std::pair{std::move(socket), false};
  }

  // A connection whose exchange went cleanly goes back to the pool; any
  // other is closed, so no late byte of a failed exchange is ever read as
  // the answer to the next one.
  void finish(const data_peer& peer, socket_ptr socket, bool clean) {
    if (!clean || !socket->is_open()) {
      boost::system::error_code ignored;
      socket->close(ignored);
      return;
    }
    std::lock_guard lock(mu_);
    auto& idle = idle_[peer];
    if (idle.size() < options_.idle_per_peer) idle.push_back(std::move(socket));
  }

  data_client_options options_;
  std::atomic<std::uint64_t> next_id_{0};
  std::mutex mu_;
  std::map<data_peer, std::vector<socket_ptr>> idle_;
};

}  // namespace corokv::net
