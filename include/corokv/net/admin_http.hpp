#pragma once
// An HTTP/1.1 admin port for a running master_server: liveness, Prometheus
// metrics and the mounted segments, for operators and scrapers rather than
// for corokv clients.
//
//   GET /health    200 text/plain "ok\n"
//   GET /metrics   Prometheus text exposition format 0.0.4
//   GET /segments  JSON array of the mounted segments
//
// HEAD is answered like GET without the body; any other method on these paths
// is 405, any other path 404. Keep-alive follows the request (HTTP/1.1 keeps
// the connection by default). A request whose header exceeds header_limit is
// refused with 413, a GET or HEAD carrying a body with 400, and a request the
// parser rejects with 400; each closes that connection only, as does a
// connection idle for idle_timeout.
//
// Everything runs on the executor given at construction, which must be the
// master's executor (or a strand shared with it): master_stats are plain
// counters the master updates without a lock, so reading them from another
// thread would race. The service itself is thread-safe. The master must
// outlive this server.

#include <corokv/detail/backoff.hpp>
#include <corokv/net/master_server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace corokv::net {


class admin_server {
 public:
  static constexpr std::size_t header_limit = 8 * 1024;
  static constexpr std::chrono::seconds idle_timeout{30};
  // How long a connection being closed after a final response keeps reading
  // (and dropping) what its client had already sent; see linger_close().
  static constexpr std::chrono::seconds linger_timeout{1};

  admin_server(boost::asio::any_io_executor ex, const master_server& master, const tcp::endpoint& listen)
      : executor_(ex), master_(master), acceptor_(ex, listen), accept_pause_(ex) {}

  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  // More samples for /metrics, from the part that owns them (a replicated
  // master's role, term and replication). Called on the executor.
  struct extra_metric {
    std::string name;  // without the corokv_master_ prefix
    std::string type;  // counter or gauge
    std::string help;
    std::uint64_t value = 0;
  };
  void set_extra_metrics(std::function<std::vector<extra_metric>()> f) { extra_metrics_ = std::move(f); }

  // Starts accepting. Call on the executor.
  void start() { boost::asio::co_spawn(executor_, accept_loop(), boost::asio::detached); }

  // Stops accepting and closes every connection; the coroutines end on their
  // own once their pending operations are cancelled. Call on the executor.
  void stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_pause_.cancel();
    for (auto& stream : connections_) stream->close();
  }

 private:
  using response = boost::beast::http::response<boost::beast::http::string_body>;
  using request = boost::beast::http::request<boost::beast::http::empty_body>;
  using connection_list = std::list<std::shared_ptr<boost::beast::tcp_stream>>;

  boost::asio::awaitable<void> accept_loop() {
    while (!stopped_) {
      auto [ec, socket] = co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (stopped_) break;  // an accept that completed just before stop()
      if (ec) {
        if (ec == boost::asio::error::operation_aborted) break;
        // A failed accept (e.g. out of descriptors) affects only that client;
        // the next one waits, so that a lasting failure does not spin.
        accept_pause_.expires_after(accept_retry_.next());
        co_await accept_pause_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        continue;
      }
      accept_retry_.reset();
      auto stream = std::make_shared<boost::beast::tcp_stream>(std::move(socket));
      connections_.push_back(stream);
      boost::asio::co_spawn(executor_, serve(stream, std::prev(connections_.end())), boost::asio::detached);
    }
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<boost::beast::tcp_stream> stream, connection_list::iterator self) {
    // Bounded so that a client cannot make the buffer grow; above header_limit
    // so that an oversized header is reported as such rather than as overflow.
    boost::beast::flat_buffer buffer(2 * header_limit);
    bool linger = false;
    while (!stopped_) {
      // A parser reads one message only: a fresh one per request. The empty
      // body makes it stop after the header; no route takes a body.
      boost::beast::http::request_parser<boost::beast::http::empty_body> parser;
      parser.header_limit(header_limit);
      stream->expires_after(idle_timeout);
      auto [read_ec, n] =
          co_await boost::beast::http::async_read_header(*stream, buffer, parser, boost::asio::as_tuple(boost::asio::use_awaitable));
      if (stopped_) break;
      response res;
      if (read_ec) {
        const auto refusal = refusal_for(read_ec);
        if (!refusal) break;  // the client went away or timed out: nobody to answer
        res = text(*refusal, 11, false, refusal == boost::beast::http::status::payload_too_large ? "header too large\n"
                                                                                   : "bad request\n");
      } else if (!parser.is_done()) {
        // A body follows the header. It is not read, so the connection can
        // carry no further request: answer and close.
        const request& req = parser.get();
        if (req.method() == boost::beast::http::verb::get || req.method() == boost::beast::http::verb::head)
          res = text(boost::beast::http::status::bad_request, req.version(), false, "a GET or HEAD request takes no body\n");
        else
          res = route(req);  // 404 or 405 already: no route accepts another method
        res.keep_alive(false);
      } else {
        res = route(parser.get());
      }
      // The same deadline for writing: a client that stops reading is dropped.
      stream->expires_after(idle_timeout);
      auto [write_ec, w] = co_await boost::beast::http::async_write(*stream, res, boost::asio::as_tuple(boost::asio::use_awaitable));
      if (write_ec || stopped_) break;
      if (!res.keep_alive()) {
        linger = true;
        break;
      }
    }
    if (linger && !stopped_) co_await linger_close(*stream);
    stream->close();
    connections_.erase(self);
  }

  // Closing a socket whose receive queue holds unread bytes makes the kernel
  // send a reset, which can destroy the final response before the client has
  // read it (typically after refusing an oversized header or a body). So:
  // half-close, then read and drop input until the client closes too or
  // linger_timeout passes.
  boost::asio::awaitable<void> linger_close(boost::beast::tcp_stream& stream) {
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) co_return;
    stream.expires_after(linger_timeout);
    std::array<char, 4096> scratch;
    for (;;) {
      auto [read_ec, n] = co_await stream.async_read_some(boost::asio::buffer(scratch), boost::asio::as_tuple(boost::asio::use_awaitable));
      if (read_ec || stopped_) break;
    }
  }

  // What to answer a request the parser refused; nothing when the error says
  // the client is gone (end of stream, reset, timeout).
  static std::optional<boost::beast::http::status> refusal_for(const boost::system::error_code& ec) {
    if (ec == boost::beast::http::error::header_limit || ec == boost::beast::http::error::buffer_overflow) return boost::beast::http::status::payload_too_large;
    if (ec == boost::beast::http::error::end_of_stream || ec == boost::beast::http::error::partial_message) return std::nullopt;
    if (ec.category() == boost::beast::http::make_error_code(boost::beast::http::error::bad_method).category()) return boost::beast::http::status::bad_request;
    return std::nullopt;
  }

  response route(const request& req) const {
    std::string_view path = req.target();
    path = path.substr(0, path.find('?'));  // a query string selects nothing here
    const unsigned version = req.version();
    const bool keep_alive = req.keep_alive();
    enum class page { health, metrics, segments };
    page p;
    if (path == "/health")
      p = page::health;
    else if (path == "/metrics")
      p = page::metrics;
    else if (path == "/segments")
      p = page::segments;
    else
      return text(boost::beast::http::status::not_found, version, keep_alive, "not found\n");

    const bool head = req.method() == boost::beast::http::verb::head;
    if (!head && req.method() != boost::beast::http::verb::get) {
      response res = text(boost::beast::http::status::method_not_allowed, version, keep_alive, "method not allowed\n");
      res.set(boost::beast::http::field::allow, "GET, HEAD");
      return res;
    }
    response res;
    try {
      switch (p) {
        case page::health: res = text(boost::beast::http::status::ok, version, keep_alive, "ok\n"); break;
        case page::metrics:
          res = make(boost::beast::http::status::ok, version, keep_alive, "text/plain; version=0.0.4", metrics_text());
          break;
        case page::segments:
          res = make(boost::beast::http::status::ok, version, keep_alive, "application/json", segments_json());
          break;
      }
    } catch (const std::exception&) {
      // Out of memory while rendering: fail this request, keep the server.
      return text(boost::beast::http::status::internal_server_error, version, false, "internal error\n");
    }
    // HEAD: the headers GET would send, Content-Length included, no body.
    if (head) res.body().clear();
    return res;
  }

  // Counters (monotonic, `_total`) and gauges (current values) in the
  // Prometheus text format: HELP and TYPE lines, then the sample.
  std::string metrics_text() const {
    const master_stats m = master_.stats();
    // One snapshot of the service: its pool's segment count and its node
    // count are the segment and node gauges, without listing either.
    const meta::service_stats s = master_.service().stats();
    fmt::memory_buffer out;
    auto metric = [&](std::string_view name, std::string_view type, std::string_view help, std::uint64_t value) {
      fmt::format_to(std::back_inserter(out),
                     "# HELP corokv_master_{0} {1}\n# TYPE corokv_master_{0} {2}\ncorokv_master_{0} {3}\n", name,
                     help, type, value);
    };
    metric("connections_accepted_total", "counter", "Metadata connections accepted.", m.connections_accepted);
    metric("connections_open", "gauge", "Metadata connections open now.", m.connections_open);
    metric("accept_errors_total", "counter", "Failed accepts of metadata connections (each retried after a growing wait).",
           m.accept_errors);
    metric("protocol_errors_total", "counter", "Metadata connections closed for a malformed frame.",
           m.protocol_errors);
    metric("requests_total", "counter", "Metadata requests decoded and answered.", m.requests);
    metric("objects", "gauge", "Committed, visible objects.", s.objects);
    metric("pending_puts", "gauge", "Puts reserved and not yet ended or revoked.", s.pending_puts);
    metric("removed_leased", "gauge", "Removed objects whose memory waits for a lease to end.", s.removed_leased);
    metric("nodes", "gauge", "Registered nodes.", s.nodes);
    metric("segments", "gauge", "Mounted segments.", s.pool.segments);
    metric("segments_held", "gauge", "Remounted segments not allocated from until older leases ran out.",
           s.pool.held);
    metric("pool_capacity_bytes", "gauge", "Bytes in all mounted memory segments.", s.pool.capacity);
    metric("pool_used_bytes", "gauge", "Memory bytes allocated to objects, pending puts and leased removals.",
           s.pool.used);
    metric("evicted_total", "counter", "Objects dropped by memory eviction (they had no disk copy).", s.evicted_total);
    metric("disk_capacity_bytes", "gauge", "Bytes in all mounted disk segments.", s.disk.capacity);
    metric("disk_used_bytes", "gauge", "Disk bytes holding copies and reservations.", s.disk.used);
    metric("disk_only_objects", "gauge", "Objects whose only copies are on disk.", s.disk_only_objects);
    metric("disks_away", "gauge",
           "Disk segments whose copies are not listed until their node offers them (dropped, or mounted again).",
           s.disks_away);
    metric("pending_demotions", "gauge", "Disk extents handed out for copies not yet reported.", s.pending_demotions);
    metric("demoted_total", "counter", "Disk copies committed.", s.demoted_total);
    metric("memory_released_total", "counter", "Evictions that kept the object on disk.", s.memory_released_total);
    metric("demotions_dropped_total", "counter", "Objects evicted while their disk copy was being made.",
           s.demotions_dropped_total);
    metric("disk_evicted_total", "counter", "Objects dropped from disk to make room.", s.disk_evicted_total);
    metric("expired_puts_total", "counter", "Pending puts revoked because they timed out.", s.expired_puts_total);
    metric("dead_nodes_total", "counter", "Nodes declared dead for silence.", s.dead_nodes_total);
    if (extra_metrics_)
      for (const auto& e : extra_metrics_()) metric(e.name, e.type, e.help, e.value);
    return fmt::to_string(out);
  }

  // The fields an operator needs to find a segment; base_address and the
  // RDMA keys are for data-plane peers, not for an admin page.
  std::string segments_json() const {
    auto list = nlohmann::json::array();
    for (const segment_descriptor& d : master_.service().segments()) {
      list.push_back({{"id", d.id},
                      {"node", d.node},
                      {"size", d.size},
                      {"endpoints",
                       {{"host_id", d.endpoints.host_id},
                        {"tcp_host", d.endpoints.tcp_host},
                        {"tcp_port", d.endpoints.tcp_port},
                        {"shm_name", d.endpoints.shm_name}}}});
    }
    // The strings come from nodes over the wire and need not be UTF-8;
    // dump() would throw on them, so invalid bytes are replaced instead.
    return list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }

  static response make(boost::beast::http::status status, unsigned version, bool keep_alive, std::string_view content_type,
                       std::string body) {
    response res{status, version};
    res.set(boost::beast::http::field::content_type, content_type);
    // Admin data is a snapshot: a cache in between must not replay it.
    res.set(boost::beast::http::field::cache_control, "no-store");
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }

  static response text(boost::beast::http::status status, unsigned version, bool keep_alive, std::string_view body) {
    return make(status, version, keep_alive, "text/plain", std::string(body));
  }

  boost::asio::any_io_executor executor_;
  const master_server& master_;
  std::function<std::vector<extra_metric>()> extra_metrics_;
  tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_pause_;
  corokv::detail::backoff accept_retry_{{std::chrono::milliseconds(5), std::chrono::milliseconds(500), 0.5}};
  connection_list connections_;
  bool stopped_ = false;
};

}  // namespace corokv::net
