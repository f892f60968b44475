// The admin HTTP port over real TCP on 127.0.0.1, driven by a Beast client:
// the three routes, the Prometheus format, error statuses, the limits, and
// bad input or stop() closing connections.

#include <corokv/net/admin_http.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>

namespace asio = boost::asio;
using namespace corokv;
using namespace corokv::net;
namespace beast = boost::beast;
namespace http = boost::beast::http;

namespace {

tcp::endpoint any_loopback_port() { return tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0); }

// A master with one node and one mounted segment, and its admin port, both on
// one io_context running on its own thread (the admin reads the master's
// unlocked counters, so they share the executor).
struct running_admin {
  asio::io_context io;
  std::shared_ptr<meta::service> service = std::make_shared<meta::service>();
  master_server master{io.get_executor(), service, any_loopback_port()};
  admin_server admin{io.get_executor(), master, any_loopback_port()};
  segment_id segment = 0;
  std::thread runner;

  running_admin() {
    REQUIRE(service->register_node(7, false) == errc::success);
    segment_endpoints e;
    e.host_id = "host-a";
    e.tcp_host = "10.0.0.7";
    e.tcp_port = 7000;
    e.shm_name = "/corokv-7";
    const auto mounted = service->mount_segment(7, 1 << 20, e);
    REQUIRE(mounted.status == errc::success);
    segment = mounted.id;
    master.start();
    admin.start();
    runner = std::thread([this] { io.run(); });
  }
  ~running_admin() {
    asio::post(io, [this] {
      admin.stop();
      master.stop();
    });
    runner.join();
  }
};

using response = http::response<http::string_body>;

// A blocking HTTP/1.1 client on one connection.
struct http_client {
  asio::io_context io;
  tcp::socket socket{io};
  beast::flat_buffer buffer;
  explicit http_client(const tcp::endpoint& server) { socket.connect(server); }

  void send(http::verb method, std::string_view target) {
    http::request<http::empty_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    http::write(socket, req);
  }

  response receive(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.skip(head);  // a response to HEAD announces a body it does not carry
    http::read(socket, buffer, parser);
    return parser.release();
  }

  response get(std::string_view target) {
    send(http::verb::get, target);
    return receive();
  }

  void send_raw(std::string_view bytes) { asio::write(socket, asio::buffer(bytes.data(), bytes.size())); }

  // Reads until the server closes this connection; true if it did. Whatever
  // arrived before the close is left in `rest`.
  bool closed_by_server(std::string* rest = nullptr) {
    std::string got(static_cast<const char*>(buffer.data().data()), buffer.size());
    std::array<char, 1024> chunk{};
    boost::system::error_code ec;
    for (;;) {
      const std::size_t n = socket.read_some(asio::buffer(chunk), ec);
      if (ec) break;
      got.append(chunk.data(), n);
    }
    if (rest) *rest = got;
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
};

// One wire request to the master, so that its request counter moves.
errc heartbeat(const tcp::endpoint& master, node_id node) {
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(master);
  std::vector<std::byte> frame(wire::header_size);
  REQUIRE(wire::encode(wire::node_request{node}, frame) == errc::success);
  const auto h = wire::encode_header(
      {wire::message_type::heartbeat, false, 1, static_cast<std::uint32_t>(frame.size() - wire::header_size)});
  std::copy(h.begin(), h.end(), frame.begin());
  asio::write(socket, asio::buffer(frame));
  std::array<std::byte, wire::header_size> head{};
  asio::read(socket, asio::buffer(head));
  wire::frame_header rh;
  REQUIRE(wire::decode_header(head, {}, rh) == errc::success);
  std::vector<std::byte> payload(rh.payload_size);
  asio::read(socket, asio::buffer(payload));
  wire::response r;
  std::span<const std::byte> trailing;
  REQUIRE(wire::decode_response(rh.type, payload, r, trailing) == errc::success);
  return std::get<wire::status_response>(r).status;
}

// The value of an unlabelled sample `name value` in an exposition.
std::optional<std::uint64_t> sample(const std::string& exposition, std::string_view name) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line))
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 && line[name.size()] == ' ')
      return std::stoull(line.substr(name.size() + 1));
  return std::nullopt;
}

}  // namespace

TEST_CASE("/health answers ok, on one kept-alive connection, and HEAD omits the body") {
  running_admin s;
  http_client c(s.admin.local_endpoint());
  for (int i = 0; i < 2; ++i) {
    const response r = c.get("/health");
    CHECK(r.result() == http::status::ok);
    CHECK(r[http::field::content_type] == "text/plain");
    CHECK(r.body() == "ok\n");
    CHECK(r.keep_alive());
  }
  c.send(http::verb::head, "/health");
  const response head = c.receive(true);
  CHECK(head.result() == http::status::ok);
  CHECK(head[http::field::content_length] == "3");
  CHECK(head.body().empty());
  CHECK(c.get("/health").body() == "ok\n");  // the HEAD answer left no stray bytes
}

TEST_CASE("/metrics is a Prometheus exposition of the master's and the service's counters") {
  running_admin s;
  http_client c(s.admin.local_endpoint());
  const response r = c.get("/metrics");
  REQUIRE(r.result() == http::status::ok);
  CHECK(r[http::field::content_type] == "text/plain; version=0.0.4");
  const std::string& text = r.body();
  CHECK(text.find("# HELP corokv_master_segments ") != std::string::npos);
  CHECK(text.find("# TYPE corokv_master_segments gauge\n") != std::string::npos);
  CHECK(text.find("\ncorokv_master_segments 1\n") != std::string::npos);
  CHECK(sample(text, "corokv_master_nodes") == 1);
  CHECK(sample(text, "corokv_master_pool_capacity_bytes") == 1u << 20);
  CHECK(sample(text, "corokv_master_pool_used_bytes") == 0);
  CHECK(sample(text, "corokv_master_objects") == 0);
  CHECK(sample(text, "corokv_master_requests_total") == 0);

  // Every sample has its HELP and TYPE, and exactly the counters end in _total.
  std::istringstream in(text);
  std::string line;
  std::set<std::string> helped, samples;
  std::size_t counters = 0, gauges = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      helped.insert(line.substr(7, line.find(' ', 7) - 7));
    } else if (line.rfind("# TYPE ", 0) == 0) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      const std::string type = line.substr(line.find(' ', 7) + 1);
      const bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
      CHECK_MESSAGE((type == "counter") == total, name);
      CHECK(helped.count(name) == 1);  // HELP comes before TYPE
      (type == "counter" ? counters : gauges) += 1;
    } else {
      REQUIRE(!line.empty());
      const std::string name = line.substr(0, line.find(' '));
      CHECK_MESSAGE(name.rfind("corokv_master_", 0) == 0, name);
      CHECK(helped.count(name) == 1);
      samples.insert(name);
    }
  }
  CHECK(counters == 11);  // 4 from master_stats, 7 from service_stats (4 of the disk tier)
  CHECK(gauges == 14);   // 5 of them the disk tier's
  CHECK(samples.count("corokv_master_segments_held") == 1);
  CHECK(samples.size() == counters + gauges);

  // A request the master answers shows up in the next scrape.
  REQUIRE(heartbeat(s.master.local_endpoint(), 7) == errc::success);
  const std::string after = c.get("/metrics").body();
  CHECK(sample(after, "corokv_master_requests_total") == 1);
  CHECK(sample(after, "corokv_master_connections_accepted_total") == 1);
  CHECK(sample(after, "corokv_master_protocol_errors_total") == 0);
  CHECK(sample(after, "corokv_master_accept_errors_total") == 0);
}

TEST_CASE("/segments lists the mounted segments as JSON, live") {
  running_admin s;
  http_client c(s.admin.local_endpoint());
  const response r = c.get("/segments");
  REQUIRE(r.result() == http::status::ok);
  CHECK(r[http::field::content_type] == "application/json");
  const auto j = nlohmann::json::parse(r.body());
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 1);
  // at() throws on a missing field, which fails the check instead of asserting.
  const auto& seg = j.at(0);
  CHECK(seg.at("id").get<segment_id>() == s.segment);
  CHECK(seg.at("node").get<node_id>() == 7);
  CHECK(seg.at("size").get<std::uint64_t>() == 1u << 20);
  const auto& endpoints = seg.at("endpoints");
  CHECK(endpoints.at("host_id") == "host-a");
  CHECK(endpoints.at("tcp_host") == "10.0.0.7");
  CHECK(endpoints.at("tcp_port") == 7000);
  CHECK(endpoints.at("shm_name") == "/corokv-7");

  REQUIRE(s.service->unmount_segment(s.segment) == errc::success);
  CHECK(nlohmann::json::parse(c.get("/segments").body()) == nlohmann::json::array());
  CHECK(sample(c.get("/metrics").body(), "corokv_master_segments") == 0);
}

TEST_CASE("an unknown path is 404, another method 405, and the connection stays usable") {
  running_admin s;
  http_client c(s.admin.local_endpoint());
  const response missing = c.get("/nope");
  CHECK(missing.result() == http::status::not_found);
  CHECK(c.get("/health?verbose=1").result() == http::status::ok);  // a query string is ignored
  c.send(http::verb::post, "/health");
  const response post = c.receive();
  CHECK(post.result() == http::status::method_not_allowed);
  CHECK(post[http::field::allow] == "GET, HEAD");
  c.send(http::verb::delete_, "/segments");
  CHECK(c.receive().result() == http::status::method_not_allowed);
  CHECK(c.get("/health").body() == "ok\n");
}

TEST_CASE("an oversized header is 413 and a body on GET 400, each closing its connection only") {
  running_admin s;
  http_client keeper(s.admin.local_endpoint());
  CHECK(keeper.get("/health").result() == http::status::ok);

  http_client big(s.admin.local_endpoint());
  big.send_raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(admin_server::header_limit, 'a') +
               "\r\n\r\n");
  CHECK(big.receive().result() == http::status::payload_too_large);
  CHECK(big.closed_by_server());

  http_client body(s.admin.local_endpoint());
  body.send_raw("GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  const response refused = body.receive();
  CHECK(refused.result() == http::status::bad_request);
  CHECK(!refused.keep_alive());
  CHECK(body.closed_by_server());

  http_client chunked(s.admin.local_endpoint());
  chunked.send_raw("GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  CHECK(chunked.receive().result() == http::status::bad_request);
  CHECK(chunked.closed_by_server());

  // A header just under the limit is served.
  http_client fits(s.admin.local_endpoint());
  fits.send_raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(admin_server::header_limit / 2, 'a') +
                "\r\n\r\n");
  CHECK(fits.receive().body() == "ok\n");

  CHECK(keeper.get("/health").body() == "ok\n");
}

TEST_CASE("garbage closes that connection: other connections still get /health") {
  running_admin s;
  http_client before(s.admin.local_endpoint());
  CHECK(before.get("/health").result() == http::status::ok);

  http_client bad(s.admin.local_endpoint());
  bad.send_raw(std::string_view("\x16\x03\x01\x02\x00\x01\xff garbage\r\n\r\n", 19));  // e.g. a TLS hello
  std::string answer;
  CHECK(bad.closed_by_server(&answer));
  CHECK(answer.rfind("HTTP/1.1 400", 0) == 0);

  CHECK(before.get("/health").body() == "ok\n");
  http_client second(s.admin.local_endpoint());
  const response r = second.get("/health");
  CHECK(r.result() == http::status::ok);
  CHECK(r.body() == "ok\n");
}

TEST_CASE("Connection: close and HTTP/1.0 end the connection after the response") {
  running_admin s;
  http_client c(s.admin.local_endpoint());
  c.send_raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const response r = c.receive();
  CHECK(r.body() == "ok\n");
  CHECK(!r.keep_alive());
  CHECK(c.closed_by_server());

  http_client old(s.admin.local_endpoint());
  old.send_raw("GET /health HTTP/1.0\r\n\r\n");
  CHECK(old.receive().version() == 10);
  CHECK(old.closed_by_server());
}

TEST_CASE("stop() closes idle kept-alive connections and the listening port") {
  running_admin s;
  const tcp::endpoint at = s.admin.local_endpoint();
  http_client c(at);
  CHECK(c.get("/health").result() == http::status::ok);
  std::promise<void> stopped;
  asio::post(s.io, [&] {
    s.admin.stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  CHECK(c.closed_by_server());
  asio::io_context io;
  tcp::socket late(io);
  boost::system::error_code ec;
  late.connect(at, ec);
  CHECK(ec == asio::error::connection_refused);
  CHECK(heartbeat(s.master.local_endpoint(), 7) == errc::success);  // the master itself runs on
}
