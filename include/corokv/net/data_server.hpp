#pragma once
// This node's data server: one TCP listener that peers' lanes talk to. It is
// a table of handlers by message type, and the range sources lanes register
// with it:
//
// - data_read and data_write are the server's own handlers. data_read sends
//   the bytes of each requested range, data_write receives bytes into
//   ranges. Every range is checked against its segment before a byte moves;
//   a range that is not inside a segment served here is refused for that
//   item (segment_not_found) and the rest of the batch proceeds. The bytes
//   of a data frame follow the frame (see wire/messages.hpp): a read is
//   answered with one gathered write straight from segment memory, and a
//   write is read straight into it, so values are never copied on the
//   server.
// - Ranges of segments that are not memory (a disk segment of this node)
//   are read by the range source that holds them (a lane registers one:
//   the disk lane, through io_uring) into staging memory of the server's,
//   then sent like the rest. Writes into them are refused per item: only
//   their owner writes there.
// - Any other message type is served by the handler a lane registers for
//   it (handle(); the lane says so by modelling serving_lane, see
//   transport/lane.hpp): the RDMA lane sets up its queue pairs over these
//   connections (rdma_connect). A handler may keep state for as long as the
//   connection it answered on lives (data_connection::hold), so that a peer
//   that goes away takes, say, its queue pair with it. While no lane serves
//   rdma_connect it is refused as a call (invalid_argument), the connection
//   staying open; a request of any other type without a handler (a
//   metadata request: this is not a master) closes its connection.
//
// A malformed frame closes that connection; the server goes on serving the
// others. A segment removed while a transfer from or into it is running
// stays mapped until the transfer ends (memory::segment_registry::pin).
//
// The range check is all the server knows: it keeps no metadata, so it
// cannot tell a stale range from a current one. The client's lease and
// re-validation protocol does that (see store.hpp).

#include <corokv/detail/backoff.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/memory/segment_registry.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <span>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

namespace corokv::net {

struct data_server_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t protocol_errors = 0;
  std::uint64_t handler_failures = 0;  // connections closed because a handler threw
  std::uint64_t items_refused = 0;  // ranges outside every served segment
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
};

// Reads the items it holds into `into` (one buffer per item, of its length,
// block-aligned) and answers each: success, or why not. holds(segment)
// says which segments it reads. Both may outlive the lane that registered
// them: they then hold nothing.
struct range_source {
  std::function<bool(segment_id)> holds;
  std::function<boost::asio::awaitable<void>(std::span<const wire::data_item>, std::span<const boost::asio::mutable_buffer>,
                                      std::span<errc>)>
      read;
};

// One connection of the data server, as a handler answers on it. Lives as
// long as the connection; used by one request at a time.
class data_connection {
 public:
  data_connection(tcp::socket& socket, const wire::limits& limits) : socket_(socket), limits_(limits) {}
  data_connection(const data_connection&) = delete;
  data_connection& operator=(const data_connection&) = delete;

  tcp::socket& socket() noexcept { return socket_; }
  const wire::limits& limits() const noexcept { return limits_; }

  // Keeps `state` while this connection lives, one per message type: a new
  // one replaces (and so releases) the last.
  void hold(wire::message_type type, std::shared_ptr<void> state) {
    for (auto& [held_type, held] : held_)
      if (held_type == type) {
        held = std::move(state);
        return;
      }
    held_.emplace_back(type, std::move(state));
  }

  // What a handler returns to close the connection.
  static boost::asio::awaitable<bool> close() { co_return false; }

  // Sends `message` as the response to request `id` of `type`; false if the
  // message exceeds the limits or the connection failed.
  template <class Message>
  boost::asio::awaitable<bool> respond(wire::message_type type, std::uint64_t id, Message message) {
    out_.clear();
    if (append_frame(type, true, id, message, out_, limits_) != errc::success) co_return false;
    auto [ec, n] = co_await boost::asio::async_write(socket_, boost::asio::buffer(out_), transfer_all_at_once{},
                                              boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return !ec;
  }

 private:
  friend class data_server;
  tcp::socket& socket_;
  const wire::limits& limits_;
  std::vector<std::pair<wire::message_type, std::shared_ptr<void>>> held_;
  // Scratch of the server's own handlers, kept across requests.
  std::vector<std::byte> out_;
  std::vector<memory::segment_registry::pinned> pins_;
  std::vector<boost::asio::const_buffer> gather_;
};

// Serves one request frame (its header and payload, valid until the
// returned coroutine ends) and answers it; false closes the connection (a
// malformed request, a failed send).
using frame_handler = std::function<boost::asio::awaitable<bool>(data_connection&, const wire::frame_header&,
                                                          std::span<const std::byte>)>;

// A handler for a call: decodes the request as a `Request` (a request that
// does not decode closes the connection) and responds with what
// answer(request, connection) returns.
template <class Request, class Answer>
frame_handler call_handler(Answer answer) {
  return [answer = std::make_shared<Answer>(std::move(answer))](
             data_connection& connection, const wire::frame_header& h,
             std::span<const std::byte> payload) -> boost::asio::awaitable<bool> {
    Request request;
    if (wire::decode_table(payload, request, connection.limits()) != errc::success) return data_connection::close();
    return connection.respond(h.type, h.request_id, (*answer)(std::as_const(request), connection));
  };
}

// A handler that refuses a well-formed call with `status` (a Response with
// a status field), keeping the connection open.
template <class Request, class Response>
frame_handler refusing_handler(errc status) {
  return call_handler<Request>([status](const Request&, data_connection&) {
    Response response{};
    response.status = status;
    return response;
  });
}

// Held by shared_ptr: its coroutines keep it alive until they end.
class data_server : public std::enable_shared_from_this<data_server> {
 public:
  data_server(boost::asio::any_io_executor ex, std::shared_ptr<memory::segment_registry> segments, const tcp::endpoint& listen,
              wire::limits limits = {})
      : executor_(ex), segments_(std::move(segments)), limits_(limits), acceptor_(ex, listen) {
    // `this` is safe: a connection's coroutine holds the server.
    own_[static_cast<std::size_t>(wire::message_type::data_read)] = std::make_shared<const frame_handler>(
        [this](data_connection& c, const wire::frame_header& h, std::span<const std::byte> payload) {
          return read_ranges(c, h, payload);
        });
    own_[static_cast<std::size_t>(wire::message_type::data_write)] = std::make_shared<const frame_handler>(
        [this](data_connection& c, const wire::frame_header& h, std::span<const std::byte> payload) {
          return write_ranges(c, h, payload);
        });
    own_[static_cast<std::size_t>(wire::message_type::rdma_connect)] = std::make_shared<const frame_handler>(
        refusing_handler<wire::rdma_connect_request, wire::rdma_connect_response>(errc::invalid_argument));
    handlers_ = own_;
  }

  data_server(const data_server&) = delete;
  data_server& operator=(const data_server&) = delete;

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  data_server_stats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

  // Requests of `type` go to `handler` from now on (those already being
  // served finish with the one they had); an empty one restores the
  // server's own answer. Thread-safe.
  void handle(wire::message_type type, frame_handler handler) {
    const auto at = static_cast<std::size_t>(type);
    std::lock_guard lock(mu_);
    handlers_.at(at) = handler ? std::make_shared<const frame_handler>(std::move(handler)) : own_.at(at);
  }

  // Ranges that are in no segment of the registry are offered to the
  // sources, in the order they were added. Thread-safe.
  void add_range_source(range_source source) {
    std::lock_guard lock(mu_);
    range_sources_.push_back(std::make_shared<const range_source>(std::move(source)));
  }

  void start() {
    boost::asio::co_spawn(executor_, [self = shared_from_this()] { return self->accept_loop(); }, boost::asio::detached);
  }

  // Stops accepting and closes every connection; thread-safe.
  void stop() {
    boost::asio::post(executor_, [this, self = shared_from_this()] {
      std::lock_guard lock(mu_);
      stopped_ = true;
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      for (auto& s : connections_) s->close(ignored);
    });
  }

 private:
  using handler_table = std::array<std::shared_ptr<const frame_handler>, wire::last_message_type + 1>;

  boost::asio::awaitable<void> accept_loop() {
    // A failed accept (e.g. out of descriptors) affects only that client;
    // the next one waits, so that a lasting failure does not spin.
    corokv::detail::backoff retry({std::chrono::milliseconds(5), std::chrono::milliseconds(500), 0.5});
    boost::asio::steady_timer pause(executor_);
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) {
        if (ec == boost::asio::error::operation_aborted || !acceptor_.is_open()) break;
        pause.expires_after(retry.next());
        co_await pause.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        continue;
      }
      retry.reset();
      socket.set_option(tcp::no_delay(true), ec);
      auto shared = std::make_shared<tcp::socket>(std::move(socket));
      std::list<std::shared_ptr<tcp::socket>>::iterator self;
      {
        std::lock_guard lock(mu_);
        if (stopped_) break;
        ++stats_.connections_accepted;
        connections_.push_back(shared);
        self = std::prev(connections_.end());
      }
      boost::asio::co_spawn(executor_, [this, keep = shared_from_this(), shared, self] { return serve(shared, self); }, boost::asio::detached);
    }
  }

  template <class F>
  void count(F f) {
    std::lock_guard lock(mu_);
    f(stats_);
  }

  std::shared_ptr<const frame_handler> handler_for(wire::message_type type) const {
    std::lock_guard lock(mu_);
    return handlers_[static_cast<std::size_t>(type)];  // decode_header bounds the type
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<tcp::socket> socket, std::list<std::shared_ptr<tcp::socket>>::iterator self) {
    std::vector<std::byte> payload;
    data_connection connection(*socket, limits_);
    for (;;) {
      wire::frame_header h;
      const frame_status got = co_await read_frame(*socket, limits_, /*response=*/false, h, payload);
      if (got == frame_status::ended || got == frame_status::closed) break;
      bool ok = got == frame_status::ok;
      if (ok) {
        // Held until the request is answered, also if replaced meanwhile.
        const std::shared_ptr<const frame_handler> handler = handler_for(h.type);
        ok = handler != nullptr;
        if (ok) {
          const std::span<const std::byte> body(payload);
          // A lane's handler that throws ends this connection only (its
          // reply may be half sent); the server and the others go on.
          bool threw = false;
          try {
            boost::asio::awaitable<bool> answer = (*handler)(connection, h, body);
            ok = co_await std::move(answer);
          } catch (...) {
            threw = true;
          }
          if (threw) {
            count([](auto& s) { ++s.handler_failures; });
            break;
          }
        }
      }
      if (!ok) {
        count([](auto& s) { ++s.protocol_errors; });
        break;
      }
    }
    std::lock_guard lock(mu_);
    boost::system::error_code ignored;
    socket->close(ignored);
    connections_.erase(self);
  }

  boost::asio::awaitable<bool> read_ranges(data_connection& c, const wire::frame_header& h, std::span<const std::byte> payload) {
    wire::data_read_request request;
    if (wire::decode_table(payload, request, limits_) != errc::success) co_return false;
    co_return co_await send_ranges(c.socket(), h.request_id, request, c.pins_, c.out_, c.gather_);
  }

  boost::asio::awaitable<bool> write_ranges(data_connection& c, const wire::frame_header& h, std::span<const std::byte> payload) {
    wire::data_write_request request;
    if (wire::decode_table(payload, request, limits_) != errc::success) co_return false;
    co_return co_await receive_ranges(c.socket(), h.request_id, request, c.pins_, c.out_);
  }

  // Pins each item's range; refused items get segment_not_found.
  void pin_all(const std::vector<wire::data_item>& items, std::vector<memory::segment_registry::pinned>& pins,
               std::vector<errc>& results) {
    pins.clear();
    results.assign(items.size(), errc::success);
    std::uint64_t refused = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      pins.push_back(segments_->pin(items[i].segment, items[i].offset, items[i].length));
      if (pins.back().bytes.size() != items[i].length || items[i].length == 0) {
        results[i] = errc::segment_not_found;
        ++refused;
      }
    }
    if (refused) count([&](auto& s) { s.items_refused += refused; });
  }

  // Returns false if the connection must close.
  boost::asio::awaitable<bool> send_ranges(tcp::socket& socket, std::uint64_t id, const wire::data_read_request& request,
                                    std::vector<memory::segment_registry::pinned>& pins, std::vector<std::byte>& out,
                                    std::vector<boost::asio::const_buffer>& gather) {
    wire::data_read_response response;
    pin_all(request.items, pins, response.results);
    const staged_ranges staged = co_await stage_held_ranges(request.items, response.results);
    response.lengths.resize(request.items.size());
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < request.items.size(); ++i)
      if (response.results[i] == errc::success) bytes += response.lengths[i] = request.items[i].length;
    out.clear();
    if (append_frame(wire::message_type::data_read, true, id, response, out, limits_) != errc::success)
      co_return false;
    gather.assign(1, boost::asio::buffer(out));
    for (std::size_t i = 0; i < pins.size(); ++i) {
      if (response.results[i] != errc::success) continue;
      if (pins[i].bytes.size() == request.items[i].length)
        append_coalesced(gather, boost::asio::const_buffer(pins[i].bytes.data(), pins[i].bytes.size()));
      else
        append_coalesced(gather, boost::asio::const_buffer(staged.at(i), request.items[i].length));
    }
    auto [ec, n] = co_await write_fully(socket, gather);
    pins.clear();
    if (ec) co_return false;
    count([&](auto& s) { s.bytes_sent += bytes; });
    co_return true;
  }

  // Items refused by the registry that a range source holds: read into
  // staging memory; their results are the source's. at(i) is item i's
  // bytes.
  struct staged_ranges {
    struct free_deleter {
      void operator()(std::byte* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<std::byte, free_deleter> memory;
    std::vector<std::uint64_t> offset;  // by item; meaningful for staged ones
    const std::byte* at(std::size_t i) const { return memory.get() + offset[i]; }
  };
  boost::asio::awaitable<staged_ranges> stage_held_ranges(const std::vector<wire::data_item>& items,
                                                   std::vector<errc>& results) {
    staged_ranges staged;
    std::vector<std::shared_ptr<const range_source>> sources;
    {
      std::lock_guard lock(mu_);
      sources = range_sources_;
    }
    if (sources.empty()) co_return staged;
    constexpr std::uint64_t align = 4096;  // a source may read with O_DIRECT
    // Each refused item's source (the first that holds it), by index.
    std::vector<std::size_t> held, source_of;
    std::uint64_t total = 0;
    staged.offset.assign(items.size(), 0);
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (results[i] != errc::segment_not_found || items[i].length == 0) continue;
      const auto holder = std::find_if(sources.begin(), sources.end(),
                                       [&](const auto& source) { return source->holds(items[i].segment); });
      if (holder == sources.end()) continue;
      held.push_back(i);
      source_of.push_back(static_cast<std::size_t>(holder - sources.begin()));
      staged.offset[i] = total;
      total += (items[i].length + align - 1) / align * align;
    }
    if (held.empty()) co_return staged;
    staged.memory.reset(static_cast<std::byte*>(std::aligned_alloc(align, total)));
    std::uint64_t refused_back = 0;
    for (std::size_t k = 0; k < sources.size(); ++k) {
      std::vector<std::size_t> mine;
      std::vector<wire::data_item> wanted;
      std::vector<boost::asio::mutable_buffer> into;
      for (std::size_t j = 0; j < held.size(); ++j) {
        if (source_of[j] != k) continue;
        const std::size_t i = held[j];
        mine.push_back(i);
        wanted.push_back(items[i]);
        into.emplace_back(staged.memory.get() + staged.offset[i], items[i].length);
      }
      if (mine.empty()) continue;
      std::vector<errc> answers(mine.size(), errc::transfer_failed);
      if (staged.memory) co_await sources[k]->read(wanted, into, answers);
      for (std::size_t j = 0; j < mine.size(); ++j) {
        results[mine[j]] = answers[j];
        if (answers[j] == errc::success) ++refused_back;  // counted as refused by pin_all
      }
    }
    if (refused_back) count([&](auto& s) { s.items_refused -= refused_back; });
    co_return staged;
  }

  boost::asio::awaitable<bool> receive_ranges(tcp::socket& socket, std::uint64_t id, const wire::data_write_request& request,
                                       std::vector<memory::segment_registry::pinned>& pins, std::vector<std::byte>& out) {
    wire::statuses_response response;
    pin_all(request.items, pins, response.results);
    // Runs of accepted items are read in one scatter read straight into
    // their segments; a refused item's bytes are read and dropped.
    std::vector<boost::asio::mutable_buffer> scatter;
    std::array<std::byte, 64 * 1024> drain{};
    std::uint64_t bytes = 0;
    auto flush = [&]() -> boost::asio::awaitable<bool> {
      if (scatter.empty()) co_return true;
      auto [ec, n] = co_await read_fully(socket, scatter);
      scatter.clear();
      co_return !ec;
    };
    for (std::size_t i = 0; i < request.items.size(); ++i) {
      if (response.results[i] == errc::success) {
        append_coalesced(scatter, boost::asio::mutable_buffer(pins[i].bytes.data(), pins[i].bytes.size()));
        bytes += pins[i].bytes.size();
        continue;
      }
      if (!co_await flush()) co_return false;
      for (std::uint64_t left = request.items[i].length; left > 0;) {
        const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left, drain.size()));
        auto [ec, n] = co_await boost::asio::async_read(socket, boost::asio::buffer(drain.data(), chunk), boost::asio::as_tuple(boost::asio::use_awaitable));
        if (ec) co_return false;
        left -= chunk;
      }
    }
    if (!co_await flush()) co_return false;
    pins.clear();
    count([&](auto& s) { s.bytes_received += bytes; });
    out.clear();
    if (append_frame(wire::message_type::data_write, true, id, response, out, limits_) != errc::success)
      co_return false;
    auto [ec, n] = co_await boost::asio::async_write(socket, boost::asio::buffer(out), transfer_all_at_once{}, boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return !ec;
  }

  boost::asio::any_io_executor executor_;
  std::shared_ptr<memory::segment_registry> segments_;
  wire::limits limits_;
  tcp::acceptor acceptor_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<tcp::socket>> connections_;
  data_server_stats stats_;
  handler_table own_;       // the server's own answers, by message type
  handler_table handlers_;  // what answers now: a lane's handler, or the server's own
  std::vector<std::shared_ptr<const range_source>> range_sources_;
  bool stopped_ = false;
};

}  // namespace corokv::net
