#pragma once
// A small etcd v3 client for what corokv needs from etcd (an owner key per
// master, bound to a lease, and a watch on it): coroutines over etcd's
// HTTP/JSON gateway, so that corokv depends on neither gRPC nor protobuf and
// starts no thread (but for Asio's resolver, when an endpoint is a host
// name rather than an address). The bodies and the parsers are in
// gateway.hpp.
//
// Each unary call is one HTTP/1.1 POST under one deadline (request_timeout)
// that covers connecting and every endpoint tried: past it the call ends
// with errc::timeout. An endpoint that cannot be reached, or that answers
// "unavailable", gives errc::rpc_failed and the next endpoint is tried; the
// one that answered last is tried first next time. Connections are kept
// between calls (a call that finds none idle opens one, so concurrent calls
// work), and one that the server closed while idle is noticed before use.
//
// Not thread-safe: call from coroutines on the client's executor (or one
// strand). The client must outlive its unary calls; a watch may still be
// running when the client is destroyed (it then returns errc::cancelled),
// as long as the executor lives on.

#include <corokv/error.hpp>
#include <corokv/etcd/gateway.hpp>
#include <corokv/types.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::etcd {


struct endpoint {
  std::string host;  // an address or a name to resolve
  std::uint16_t port = 2379;
};

struct client_options {
  std::vector<endpoint> endpoints;
  duration request_timeout = std::chrono::seconds(1);
  // Keep connections open between unary calls. Off, each call opens and
  // closes its own: measured against a local etcd 3.4, a range then takes
  // ~780 us instead of ~590 us (the gateway itself costs most of that), and
  // every call leaves a socket in TIME_WAIT.
  bool reuse_connections = true;
};

class client {
 public:
  // Idle connections kept per endpoint; more concurrent calls than this open
  // connections that are closed after their call.
  static constexpr std::size_t max_idle_connections = 4;
  // The largest unary response accepted (a range of a large prefix).
  static constexpr std::uint64_t max_response_body = 64 * 1024 * 1024;

  client(boost::asio::any_io_executor ex, client_options options)
      : executor_(std::move(ex)), options_(std::move(options)), idle_(options_.endpoints.size()) {}
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  ~client() { cancel_watches(); }

  const client_options& options() const noexcept { return options_; }
  const boost::asio::any_io_executor& get_executor() const noexcept { return executor_; }

  // The key (an empty range_result::kvs if absent) and the store's revision.
  boost::asio::awaitable<result<range_result>> range(std::string key) {
    if (key.empty()) co_return failed<range_result>(errc::invalid_key);
    std::string request = gateway::range_request(key);
    auto [ec, body] = co_await post(gateway::range_path, std::move(request));
    co_return ec ? failed<range_result>(ec) : gateway::parse_range(body);
  }

  // Every key starting with `prefix` (all keys if it is empty), in key order.
  boost::asio::awaitable<result<range_result>> range_prefix(std::string prefix) {
    std::string request = gateway::range_prefix_request(prefix);
    auto [ec, body] = co_await post(gateway::range_path, std::move(request));
    co_return ec ? failed<range_result>(ec) : gateway::parse_range(body);
  }

  // The revision of the put. not_found if lease_id names no lease.
  boost::asio::awaitable<result<std::int64_t>> put(std::string key, std::string value, std::int64_t lease_id = 0) {
    if (key.empty()) co_return failed<std::int64_t>(errc::invalid_key);
    std::string request = gateway::put_request(key, value, lease_id);
    auto [ec, body] = co_await post(gateway::put_path, std::move(request));
    co_return ec ? failed<std::int64_t>(ec) : gateway::parse_put(body);
  }

  // Puts the key only if it does not exist: created, with the key's
  // create_revision; or not, with the key as it exists.
  boost::asio::awaitable<result<create_result>> create_if_absent(std::string key, std::string value,
                                                         std::int64_t lease_id = 0) {
    if (key.empty()) co_return failed<create_result>(errc::invalid_key);
    std::string request = gateway::create_if_absent_request(key, value, lease_id);
    auto [ec, body] = co_await post(gateway::txn_path, std::move(request));
    co_return ec ? failed<create_result>(ec) : gateway::parse_create_if_absent(body);
  }

  // Deletes the key only if its create_revision is `create_revision` (the
  // caller's own incarnation of it); whether it did.
  boost::asio::awaitable<result<bool>> delete_if_created_at(std::string key, std::int64_t create_revision) {
    if (key.empty()) co_return failed<bool>(errc::invalid_key);
    // 0 would match an absent key: the call would "succeed" deleting nothing.
    if (create_revision <= 0) co_return failed<bool>(errc::invalid_argument);
    std::string request = gateway::delete_if_created_at_request(key, create_revision);
    auto [ec, body] = co_await post(gateway::txn_path, std::move(request));
    co_return ec ? failed<bool>(ec) : gateway::parse_delete_if_created_at(body);
  }

  boost::asio::awaitable<result<lease_grant>> grant_lease(std::chrono::seconds ttl) {
    if (ttl.count() <= 0) co_return failed<lease_grant>(errc::invalid_argument);
    std::string request = gateway::lease_grant_request(ttl.count());
    auto [ec, body] = co_await post(gateway::lease_grant_path, std::move(request));
    co_return ec ? failed<lease_grant>(ec) : gateway::parse_lease_grant(body);
  }

  // Renews the lease once: its TTL from now on, in seconds; not_found when
  // the lease has expired or was revoked.
  boost::asio::awaitable<result<std::int64_t>> keep_alive_once(std::int64_t lease_id) {
    std::string request = gateway::lease_keep_alive_request(lease_id);
    auto [ec, body] = co_await post(gateway::lease_keep_alive_path, std::move(request));
    co_return ec ? failed<std::int64_t>(ec) : gateway::parse_lease_keep_alive(body);
  }

  // Revokes the lease, deleting the keys bound to it; not_found if it is gone.
  boost::asio::awaitable<std::error_code> revoke_lease(std::int64_t lease_id) {
    std::string request = gateway::lease_revoke_request(lease_id);
    auto [ec, body] = co_await post(gateway::lease_revoke_path, std::move(request));
    co_return ec ? ec : gateway::parse_lease_revoke(body);
  }

  // Watches one key on a connection of its own: on_message gets every
  // message in order, the first being the `created` one (events from
  // start_revision on, if not 0, come after it). Returns when the watch
  // ends: errc::cancelled after cancel_watches() (or the caller's
  // cancellation), no error when etcd cancelled the watch (the last message
  // says so: canceled, and compact_revision if start_revision was compacted
  // away), rpc_failed when the connection was lost or the stream ended,
  // timeout if it could not be set up within request_timeout. Once created,
  // a watch has no deadline.
  boost::asio::awaitable<std::error_code> watch(std::string key, std::int64_t start_revision,
                                         std::function<void(const watch_message&)> on_message) {
    if (key.empty()) co_return errc::invalid_key;
    if (options_.endpoints.empty()) co_return errc::invalid_argument;
    const std::string body = gateway::watch_create_request(key, start_revision);
    const time_point deadline = clock_type::now() + options_.request_timeout;
    auto state = std::make_shared<watch_state>();
    // The registry is shared, so that a watch ending after the client was
    // destroyed unregisters safely.
    const registration reg(watches_, state);
    std::error_code ec = errc::rpc_failed;
    for (std::size_t i = 0; i < options_.endpoints.size(); ++i) {
      const std::size_t index = (preferred_ + i) % options_.endpoints.size();
      state->conn = std::make_unique<connection>(executor_);
      ec = co_await watch_on(index, body, deadline, *state, on_message);
      // Touch nothing of the client once cancelled: it may be gone.
      if (state->cancelled) co_return errc::cancelled;
      if (ec != errc::rpc_failed || state->established) break;
      if (clock_type::now() >= deadline) {
        ec = errc::timeout;
        break;
      }
    }
    co_return ec;
  }

  // Ends every running watch: each returns errc::cancelled. Watches started
  // afterwards are not affected.
  void cancel_watches() {
    for (const auto& w : *watches_) {
      w->cancelled = true;
      if (w->conn) w->conn->stream.close();
    }
  }

 private:
  using tcp = boost::asio::ip::tcp;

  struct connection {
    explicit connection(const boost::asio::any_io_executor& ex) : stream(ex) {}
    boost::beast::tcp_stream stream;
    boost::beast::flat_buffer buffer;  // kept with its connection: it may hold bytes of the next response
  };

  struct watch_state {
    std::unique_ptr<connection> conn;
    bool cancelled = false;
    bool established = false;  // a first message arrived: from then on, failures are not retried elsewhere
  };
  using watch_list = std::list<std::shared_ptr<watch_state>>;

  // A watch's entry in the registry cancel_watches() walks, for as long as
  // the watch runs.
  class registration {
   public:
    registration(const std::shared_ptr<watch_list>& list, std::shared_ptr<watch_state> w) : list_(list) {
      list_->push_back(std::move(w));
      it_ = std::prev(list_->end());
    }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;
    ~registration() { list_->erase(it_); }

   private:
    std::shared_ptr<watch_list> list_;
    watch_list::iterator it_;
  };

  template <class T>
  static result<T> failed(std::error_code ec) {
    return result<T>(ec, T{});
  }

  static std::error_code transport_error(const boost::system::error_code& ec) {
    if (ec == boost::beast::error::timeout) return errc::timeout;
    if (ec == boost::asio::error::operation_aborted) return errc::cancelled;
    if (ec == boost::beast::http::error::end_of_stream || ec == boost::beast::http::error::partial_message) return errc::rpc_failed;
    // Any other HTTP parse error: the peer broke the framing or the limits.
    if (ec.category() == boost::beast::http::make_error_code(boost::beast::http::error::end_of_stream).category()) return errc::protocol_error;
    return errc::rpc_failed;  // refused, reset, unreachable, ...
  }

  // A non-200 answer: the gateway's error object says what failed; without
  // one, a 5xx is the member's (or a proxy's) failure, anything else ours.
  static std::error_code status_error(unsigned status, std::string_view body) {
    const std::error_code ec = gateway::parse_error(body);
    if (ec != errc::protocol_error) return ec;
    return status >= 500 ? make_error_code(errc::rpc_failed) : ec;
  }

  // One call: the endpoints in turn, from the one that answered last, all
  // under one deadline. Callers name the body before the co_await: GCC 12
  // destroys temporaries inside a co_await expression twice.
  boost::asio::awaitable<result<std::string>> post(std::string_view path, std::string body) {
    if (options_.endpoints.empty()) co_return failed<std::string>(errc::invalid_argument);
    const time_point deadline = clock_type::now() + options_.request_timeout;
    const std::size_t n = options_.endpoints.size();
    const std::size_t first = preferred_;
    std::error_code ec;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t index = (first + i) % n;
      auto r = co_await exchange(index, path, body, deadline);
      if (r.first != errc::rpc_failed) {
        if (r.first != errc::timeout && r.first != errc::cancelled) preferred_ = index;  // it answered
        co_return r;
      }
      ec = r.first;
      if (clock_type::now() >= deadline) co_return failed<std::string>(errc::timeout);
    }
    co_return failed<std::string>(ec);
  }

  // One POST to one endpoint: the response body if the status is 200.
  boost::asio::awaitable<result<std::string>> exchange(std::size_t index, std::string_view path, const std::string& body,
                                                time_point deadline) {
    std::unique_ptr<connection> conn = take_idle(index);
    if (!conn) {
      conn = std::make_unique<connection>(executor_);
      if (const auto ec = co_await open(*conn, index, deadline)) co_return failed<std::string>(ec);
    }
    boost::beast::tcp_stream& stream = conn->stream;
    stream.expires_at(deadline);
    auto req = make_request(index, path, body);
    auto [write_ec, written] = co_await boost::beast::http::async_write(stream, req, boost::asio::as_tuple(boost::asio::use_awaitable));
    if (write_ec) co_return failed<std::string>(transport_error(write_ec));
    boost::beast::http::response_parser<boost::beast::http::string_body> parser;
    parser.body_limit(max_response_body);
    auto [read_ec, read] =
        co_await boost::beast::http::async_read(stream, conn->buffer, parser, boost::asio::as_tuple(boost::asio::use_awaitable));
    if (read_ec) co_return failed<std::string>(transport_error(read_ec));
    auto res = parser.release();
    if (options_.reuse_connections && res.keep_alive()) give_back(index, std::move(conn));
    if (res.result() != boost::beast::http::status::ok) co_return failed<std::string>(status_error(res.result_int(), res.body()));
    co_return result<std::string>(std::error_code{}, std::move(res.body()));
  }

  boost::beast::http::request<boost::beast::http::string_body> make_request(std::size_t index, std::string_view path,
                                                const std::string& body) const {
    const endpoint& ep = options_.endpoints[index];
    boost::beast::http::request<boost::beast::http::string_body> req{boost::beast::http::verb::post, path, 11};
    const bool v6 = ep.host.find(':') != std::string::npos;
    req.set(boost::beast::http::field::host, (v6 ? "[" + ep.host + "]" : ep.host) + ":" + std::to_string(ep.port));
    req.set(boost::beast::http::field::content_type, "application/json");
    req.keep_alive(options_.reuse_connections);
    req.body() = body;
    req.prepare_payload();
    return req;
  }

  // Connects `conn` to the endpoint by the deadline. After each wait only
  // `conn` is touched: a watch's connection may outlive the client.
  boost::asio::awaitable<std::error_code> open(connection& conn, std::size_t index, time_point deadline) {
    const endpoint& ep = options_.endpoints[index];
    std::vector<tcp::endpoint> targets;
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(ep.host, ec);
    if (!ec) {
      targets.emplace_back(address, ep.port);
    } else {
      auto [resolve_ec, found] = co_await resolve(ep, deadline);
      if (resolve_ec) co_return resolve_ec;
      for (const auto& entry : found) targets.push_back(entry.endpoint());
    }
    conn.stream.expires_at(deadline);
    auto [connect_ec, connected] = co_await conn.stream.async_connect(targets, boost::asio::as_tuple(boost::asio::use_awaitable));
    if (connect_ec) co_return transport_error(connect_ec);
    conn.stream.socket().set_option(tcp::no_delay(true), ec);
    co_return std::error_code{};
  }

  // A resolver cannot take a deadline: a timer cancels it. Both handlers
  // hold what they use, since either may run after this frame has moved on.
  boost::asio::awaitable<result<tcp::resolver::results_type>> resolve(const endpoint& ep, time_point deadline) {
    auto resolver = std::make_shared<tcp::resolver>(executor_);
    auto expired = std::make_shared<bool>(false);
    boost::asio::steady_timer timer(executor_, deadline);
    timer.async_wait([resolver, expired](const boost::system::error_code& ec) {
      if (ec) return;
      *expired = true;
      resolver->cancel();
    });
    const std::string service = std::to_string(ep.port);  // named: see post()
    auto [ec, found] = co_await resolver->async_resolve(ep.host, service,
                                                        boost::asio::as_tuple(boost::asio::use_awaitable));
    timer.cancel();
    if (!ec) co_return result<tcp::resolver::results_type>(std::error_code{}, std::move(found));
    const errc e = *expired ? errc::timeout : ec == boost::asio::error::operation_aborted ? errc::cancelled : errc::rpc_failed;
    co_return failed<tcp::resolver::results_type>(e);
  }

  // An idle connection to the endpoint that is still usable. One the server
  // closed while idle (an idle timeout, a restart) reads as end of stream,
  // or as readable when it sent something unasked: both are dropped here
  // rather than failing the call that would pick them.
  std::unique_ptr<connection> take_idle(std::size_t index) {
    auto& list = idle_[index];
    while (!list.empty()) {
      std::unique_ptr<connection> conn = std::move(list.back());
      list.pop_back();
      if (conn->buffer.size() == 0 && still_open(conn->stream.socket())) return conn;
    }
    return nullptr;
  }

  static bool still_open(tcp::socket& socket) {
    boost::system::error_code ec;
    socket.non_blocking(true, ec);
    if (ec) return false;
    char byte;
    socket.receive(boost::asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    const bool open = ec == boost::asio::error::would_block;
    socket.non_blocking(false, ec);
    return open && !ec;
  }

  void give_back(std::size_t index, std::unique_ptr<connection> conn) {
    conn->stream.expires_never();
    if (idle_[index].size() < max_idle_connections) idle_[index].push_back(std::move(conn));
  }

  // One watch on one endpoint; see watch(). After each wait, `w.cancelled`
  // is checked before anything else: the client may be gone.
  boost::asio::awaitable<std::error_code> watch_on(std::size_t index, const std::string& body, time_point deadline,
                                            watch_state& w,
                                            const std::function<void(const watch_message&)>& on_message) {
    connection& conn = *w.conn;
    const std::error_code open_ec = co_await open(conn, index, deadline);
    if (w.cancelled) co_return errc::cancelled;
    if (open_ec) co_return open_ec;
    boost::beast::tcp_stream& stream = conn.stream;
    stream.expires_at(deadline);  // until the first message
    auto req = make_request(index, gateway::watch_path, body);
    auto [write_ec, written] = co_await boost::beast::http::async_write(stream, req, boost::asio::as_tuple(boost::asio::use_awaitable));
    if (w.cancelled) co_return errc::cancelled;
    if (write_ec) co_return transport_error(write_ec);

    // The body is chunked and endless: chunk data goes to the line splitter,
    // not to the string body, which only holds a (non-chunked) error answer.
    boost::beast::http::response_parser<boost::beast::http::string_body> parser;
    parser.body_limit(max_response_body);
    gateway::line_splitter lines;
    bool overflow = false;
    auto on_chunk = [&](std::uint64_t, boost::beast::string_view data, boost::system::error_code& ec) -> std::size_t {
      if (!lines.append(std::string_view(data.data(), data.size()))) {
        overflow = true;
        ec = boost::beast::http::error::body_limit;
      }
      return data.size();
    };
    parser.on_chunk_body(on_chunk);
    auto [header_ec, header_n] =
        co_await boost::beast::http::async_read_header(stream, conn.buffer, parser, boost::asio::as_tuple(boost::asio::use_awaitable));
    if (w.cancelled) co_return errc::cancelled;
    if (header_ec) co_return transport_error(header_ec);
    if (parser.get().result() != boost::beast::http::status::ok) {
      auto [body_ec, body_n] =
          co_await boost::beast::http::async_read(stream, conn.buffer, parser, boost::asio::as_tuple(boost::asio::use_awaitable));
      if (w.cancelled) co_return errc::cancelled;
      if (body_ec) co_return transport_error(body_ec);
      std::string error_body = parser.get().body();
      if (error_body.empty())
        if (auto line = lines.next()) error_body = std::move(*line);
      co_return status_error(parser.get().result_int(), error_body);
    }
    if (!parser.chunked()) co_return errc::protocol_error;
    parser.body_limit(boost::none);  // lines are bounded by the splitter instead

    for (;;) {
      while (auto line = lines.next()) {
        auto [parse_ec, message] = gateway::parse_watch_message(*line);
        if (parse_ec) co_return parse_ec;
        if (!w.established) {
          w.established = true;
          stream.expires_never();
        }
        on_message(message);
        if (w.cancelled) co_return errc::cancelled;  // on_message called cancel_watches()
        if (message.canceled) co_return std::error_code{};
      }
      if (parser.is_done()) co_return errc::rpc_failed;  // the server ended the stream
      auto [read_ec, read] =
          co_await boost::beast::http::async_read_some(stream, conn.buffer, parser, boost::asio::as_tuple(boost::asio::use_awaitable));
      if (w.cancelled) co_return errc::cancelled;
      if (overflow) co_return errc::protocol_error;
      if (read_ec) co_return transport_error(read_ec);
    }
  }

  boost::asio::any_io_executor executor_;
  client_options options_;
  std::vector<std::vector<std::unique_ptr<connection>>> idle_;  // per endpoint
  std::size_t preferred_ = 0;                                   // the endpoint that answered last
  std::shared_ptr<watch_list> watches_ = std::make_shared<watch_list>();
};

}  // namespace corokv::etcd
