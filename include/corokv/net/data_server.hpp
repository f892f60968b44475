#pragma once
// Serves this node's segments to other nodes over TCP: data_read sends the
// bytes of each requested range, data_write receives bytes into ranges.
// Every range is checked against its segment before a byte moves; a range
// that is not inside a segment served here is refused for that item
// (segment_not_found) and the rest of the batch proceeds. The bytes of a
// data frame follow the frame (see wire/messages.hpp): a read is answered
// with one gathered write straight from segment memory, and a write is read
// straight into it, so values are never copied on the server.
//
// A malformed frame closes that connection; the server goes on serving the
// others. A segment removed while a transfer from or into it is running
// stays mapped until the transfer ends (segment_registry::pin).
//
// An RDMA lane on this node sets up its queue pairs over these connections
// too (rdma_connect, see transport/rdma_lane.hpp): the server hands the
// request to the lane's acceptor and holds what the acceptor returns (the
// responding queue pair) for as long as the connection lives, so a peer
// that goes away takes its queue pair with it.
//
// Ranges of segments that are not memory (a disk segment of this node) are
// read by the range_reader a lane installs (the disk lane, through
// io_uring) into staging memory of the server's, then sent like the rest.
// Writes into them are refused per item: only their owner writes there.
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

#include <array>
#include <cstdlib>
#include <span>
#include <atomic>
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
  std::uint64_t items_refused = 0;  // ranges outside every served segment
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
};

// Answers an rdma_connect; the second member is held while the connection
// that asked lives.
using rdma_acceptor =
    std::function<std::pair<wire::rdma_connect_response, std::shared_ptr<void>>(const wire::rdma_connect_request&)>;

// Reads the items it holds into `into` (one buffer per item, of its length,
// block-aligned) and answers each: success, or why not. holds(segment)
// says which segments it reads.
struct range_reader {
  std::function<bool(segment_id)> holds;
  std::function<asio::awaitable<void>(std::span<const wire::data_item>, std::span<const asio::mutable_buffer>,
                                      std::span<errc>)>
      read;
};

// Held by shared_ptr: its coroutines keep it alive until they end.
class data_server : public std::enable_shared_from_this<data_server> {
 public:
  data_server(asio::any_io_executor ex, std::shared_ptr<segment_registry> segments, const tcp::endpoint& listen,
              wire::limits limits = {})
      : executor_(ex), segments_(std::move(segments)), limits_(limits), acceptor_(ex, listen) {}

  data_server(const data_server&) = delete;
  data_server& operator=(const data_server&) = delete;

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  data_server_stats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

  // Without one, ranges of segments not in the registry are refused.
  // Thread-safe.
  void set_range_reader(range_reader reader) {
    std::lock_guard lock(mu_);
    range_reader_ = std::make_shared<range_reader>(std::move(reader));
  }

  // Without one, an rdma_connect is answered invalid_argument. Thread-safe.
  void set_rdma_acceptor(rdma_acceptor acceptor) {
    std::lock_guard lock(mu_);
    rdma_acceptor_ = std::move(acceptor);
  }

  void start() {
    asio::co_spawn(executor_, [self = shared_from_this()] { return self->accept_loop(); }, asio::detached);
  }

  // Stops accepting and closes every connection; thread-safe.
  void stop() {
    asio::post(executor_, [this, self = shared_from_this()] {
      std::lock_guard lock(mu_);
      stopped_ = true;
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      for (auto& s : connections_) s->close(ignored);
    });
  }

 private:
  asio::awaitable<void> accept_loop() {
    // A failed accept (e.g. out of descriptors) affects only that client;
    // the next one waits, so that a lasting failure does not spin.
    corokv::detail::backoff retry({std::chrono::milliseconds(5), std::chrono::milliseconds(500), 0.5});
    asio::steady_timer pause(executor_);
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
        pause.expires_after(retry.next());
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
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
      asio::co_spawn(executor_, [this, keep = shared_from_this(), shared, self] { return serve(shared, self); }, asio::detached);
    }
  }

  template <class F>
  void count(F f) {
    std::lock_guard lock(mu_);
    f(stats_);
  }

  asio::awaitable<void> serve(std::shared_ptr<tcp::socket> socket, std::list<std::shared_ptr<tcp::socket>>::iterator self) {
    std::vector<std::byte> payload, out;
    std::vector<segment_registry::pinned> pins;
    std::vector<asio::const_buffer> gather;
    std::shared_ptr<void> rdma_peer;  // one queue pair per connection; a new connect replaces it
    for (;;) {
      wire::frame_header h;
      const frame_status got = co_await read_frame(*socket, limits_, /*response=*/false, h, payload);
      if (got == frame_status::ended || got == frame_status::closed) break;
      bool ok = got == frame_status::ok;
      if (ok && h.type == wire::message_type::data_read) {
        wire::data_read_request request;
        ok = wire::decode_table(payload, request, limits_) == errc::success;
        if (ok) ok = co_await send_ranges(*socket, h.request_id, request, pins, out, gather);
      } else if (ok && h.type == wire::message_type::data_write) {
        wire::data_write_request request;
        ok = wire::decode_table(payload, request, limits_) == errc::success;
        if (ok) ok = co_await receive_ranges(*socket, h.request_id, request, pins, out);
      } else if (ok && h.type == wire::message_type::rdma_connect) {
        wire::rdma_connect_request request;
        ok = wire::decode_table(payload, request, limits_) == errc::success;
        if (ok) ok = co_await answer_rdma_connect(*socket, h.request_id, request, rdma_peer, out);
      } else if (ok) {
        ok = false;  // a metadata request: this is not a master
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

  asio::awaitable<bool> answer_rdma_connect(tcp::socket& socket, std::uint64_t id,
                                            const wire::rdma_connect_request& request, std::shared_ptr<void>& held,
                                            std::vector<std::byte>& out) {
    rdma_acceptor acceptor;
    {
      std::lock_guard lock(mu_);
      acceptor = rdma_acceptor_;
    }
    wire::rdma_connect_response response{errc::invalid_argument, {}};
    if (acceptor) std::tie(response, held) = acceptor(request);
    out.clear();
    if (append_frame(wire::message_type::rdma_connect, true, id, response, out, limits_) != errc::success)
      co_return false;
    auto [ec, n] = co_await asio::async_write(socket, asio::buffer(out), transfer_all_at_once{}, asio::as_tuple(asio::use_awaitable));
    co_return !ec;
  }

  // Pins each item's range; refused items get segment_not_found.
  void pin_all(const std::vector<wire::data_item>& items, std::vector<segment_registry::pinned>& pins,
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
  asio::awaitable<bool> send_ranges(tcp::socket& socket, std::uint64_t id, const wire::data_read_request& request,
                                    std::vector<segment_registry::pinned>& pins, std::vector<std::byte>& out,
                                    std::vector<asio::const_buffer>& gather) {
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
    gather.assign(1, asio::buffer(out));
    for (std::size_t i = 0; i < pins.size(); ++i) {
      if (response.results[i] != errc::success) continue;
      if (pins[i].bytes.size() == request.items[i].length)
        append_coalesced(gather, asio::const_buffer(pins[i].bytes.data(), pins[i].bytes.size()));
      else
        append_coalesced(gather, asio::const_buffer(staged.at(i), request.items[i].length));
    }
    auto [ec, n] = co_await write_fully(socket, gather);
    pins.clear();
    if (ec) co_return false;
    count([&](auto& s) { s.bytes_sent += bytes; });
    co_return true;
  }

  // Items refused by the registry that the range reader holds: read into
  // staging memory; their results are the reader's. at(i) is item i's bytes.
  struct staged_ranges {
    struct free_deleter {
      void operator()(std::byte* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<std::byte, free_deleter> memory;
    std::vector<std::uint64_t> offset;  // by item; meaningful for staged ones
    const std::byte* at(std::size_t i) const { return memory.get() + offset[i]; }
  };
  asio::awaitable<staged_ranges> stage_held_ranges(const std::vector<wire::data_item>& items,
                                                   std::vector<errc>& results) {
    staged_ranges staged;
    std::shared_ptr<range_reader> reader;
    {
      std::lock_guard lock(mu_);
      reader = range_reader_;
    }
    if (!reader) co_return staged;
    constexpr std::uint64_t align = 4096;  // the reader may read with O_DIRECT
    std::vector<std::size_t> held;
    std::uint64_t total = 0;
    staged.offset.assign(items.size(), 0);
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (results[i] != errc::segment_not_found || items[i].length == 0 || !reader->holds(items[i].segment)) continue;
      held.push_back(i);
      staged.offset[i] = total;
      total += (items[i].length + align - 1) / align * align;
    }
    if (held.empty()) co_return staged;
    staged.memory.reset(static_cast<std::byte*>(std::aligned_alloc(align, total)));
    std::vector<wire::data_item> wanted;
    std::vector<asio::mutable_buffer> into;
    for (std::size_t i : held) {
      wanted.push_back(items[i]);
      into.emplace_back(staged.memory.get() + staged.offset[i], items[i].length);
    }
    std::vector<errc> answers(held.size(), errc::transfer_failed);
    if (staged.memory) co_await reader->read(wanted, into, answers);
    std::uint64_t refused_back = 0;
    for (std::size_t j = 0; j < held.size(); ++j) {
      results[held[j]] = answers[j];
      if (answers[j] == errc::success) ++refused_back;  // counted as refused by pin_all
    }
    if (refused_back) count([&](auto& s) { s.items_refused -= refused_back; });
    co_return staged;
  }

  asio::awaitable<bool> receive_ranges(tcp::socket& socket, std::uint64_t id, const wire::data_write_request& request,
                                       std::vector<segment_registry::pinned>& pins, std::vector<std::byte>& out) {
    wire::statuses_response response;
    pin_all(request.items, pins, response.results);
    // Runs of accepted items are read in one scatter read straight into
    // their segments; a refused item's bytes are read and dropped.
    std::vector<asio::mutable_buffer> scatter;
    std::array<std::byte, 64 * 1024> drain{};
    std::uint64_t bytes = 0;
    auto flush = [&]() -> asio::awaitable<bool> {
      if (scatter.empty()) co_return true;
      auto [ec, n] = co_await read_fully(socket, scatter);
      scatter.clear();
      co_return !ec;
    };
    for (std::size_t i = 0; i < request.items.size(); ++i) {
      if (response.results[i] == errc::success) {
        append_coalesced(scatter, asio::mutable_buffer(pins[i].bytes.data(), pins[i].bytes.size()));
        bytes += pins[i].bytes.size();
        continue;
      }
      if (!co_await flush()) co_return false;
      for (std::uint64_t left = request.items[i].length; left > 0;) {
        const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left, drain.size()));
        auto [ec, n] = co_await asio::async_read(socket, asio::buffer(drain.data(), chunk), asio::as_tuple(asio::use_awaitable));
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
    auto [ec, n] = co_await asio::async_write(socket, asio::buffer(out), transfer_all_at_once{}, asio::as_tuple(asio::use_awaitable));
    co_return !ec;
  }

  asio::any_io_executor executor_;
  std::shared_ptr<segment_registry> segments_;
  wire::limits limits_;
  tcp::acceptor acceptor_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<tcp::socket>> connections_;
  data_server_stats stats_;
  rdma_acceptor rdma_acceptor_;
  std::shared_ptr<range_reader> range_reader_;
  bool stopped_ = false;
};

}  // namespace corokv::net
