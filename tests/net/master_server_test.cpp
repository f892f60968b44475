// The metadata server over real TCP on 127.0.0.1: the protocol end to end,
// pipelining, and malformed input closing only the connection that sent it.

#include <corokv/net/master_server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <doctest/doctest.h>

#include <future>
#include <thread>

using namespace corokv;
using namespace corokv::net;
using namespace std::chrono_literals;

namespace {

// A server on an ephemeral loopback port, its io_context on its own thread.
struct running_server {
  asio::io_context io;
  std::shared_ptr<meta::service> service = std::make_shared<meta::service>();
  master_server server{io.get_executor(), service, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::thread runner;

  running_server() {
    server.start();
    runner = std::thread([this] { io.run(); });
  }
  ~running_server() {
    asio::post(io, [this] { server.stop(); });
    runner.join();
  }
  master_stats stats() {
    std::promise<master_stats> p;
    asio::post(io, [&] { p.set_value(server.stats()); });
    return p.get_future().get();
  }
};

// A blocking client speaking raw frames.
struct raw_client {
  asio::io_context io;
  tcp::socket socket{io};
  explicit raw_client(const tcp::endpoint& server) { socket.connect(server); }

  template <class M>
  void send(wire::message_type type, const M& message, std::uint64_t id) {
    std::vector<std::byte> frame(wire::header_size);
    REQUIRE(wire::encode(message, frame) == errc::success);
    const auto h = wire::encode_header({type, false, id, static_cast<std::uint32_t>(frame.size() - wire::header_size)});
    std::copy(h.begin(), h.end(), frame.begin());
    asio::write(socket, asio::buffer(frame));
  }

  // Reads one response; returns its header, decodes the payload into out.
  wire::frame_header receive(wire::response& out) {
    std::array<std::byte, wire::header_size> head{};
    asio::read(socket, asio::buffer(head));
    wire::frame_header h;
    REQUIRE(wire::decode_header(head, {}, h) == errc::success);
    REQUIRE(h.response);
    std::vector<std::byte> payload(h.payload_size);
    asio::read(socket, asio::buffer(payload));
    std::span<const std::byte> trailing;
    REQUIRE(wire::decode_response(h.type, payload, out, trailing) == errc::success);
    return h;
  }

  template <class Response, class M>
  Response call(wire::message_type type, const M& message) {
    send(type, message, 1);
    wire::response r;
    receive(r);
    return std::get<Response>(r);
  }

  // True once the server has closed this connection.
  bool closed_by_server() {
    std::array<std::byte, 1> b{};
    boost::system::error_code ec;
    socket.read_some(asio::buffer(b), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
};

}  // namespace

TEST_CASE("the master serves the metadata protocol over TCP") {
  running_server s;
  raw_client c(s.server.local_endpoint());
  using wire::message_type;
  CHECK(c.call<wire::status_response>(message_type::register_node, wire::node_request{5}).status == errc::success);
  auto mounted = c.call<wire::mount_response>(message_type::mount_segment, wire::mount_request{5, 1 << 20, 0, {}, false});
  REQUIRE(mounted.status == errc::success);
  std::vector<std::string_view> keys{"a", "b", ""};
  auto started = c.call<wire::put_start_response>(message_type::put_start,
                                                  wire::put_start_request{keys, {100, 200, 10}, 1, 5});
  REQUIRE(started.results.size() == 3);
  CHECK(started.results[0].ok());
  CHECK(started.results[2].status == errc::invalid_key);  // bad input stays per key
  auto ended = c.call<wire::statuses_response>(
      message_type::put_end,
      wire::versioned_keys_request{keys, {started.results[0].version, started.results[1].version, 0}});
  CHECK(ended.results == std::vector<errc>{errc::success, errc::success, errc::invalid_key});
  auto q = c.call<wire::query_response>(message_type::query, wire::query_request{keys, 5'000'000'000});
  REQUIRE(q.results.size() == 3);
  CHECK(q.results[1].ok());
  CHECK(q.results[1].size == 200);
  CHECK(q.results[1].replicas[0].segment == mounted.id);
  auto prefix = c.call<wire::prefix_response>(message_type::exist_prefix, wire::keys_request{{"a", "b", "c"}});
  CHECK(prefix.result.matched == 2);
  auto segs = c.call<wire::segments_response>(message_type::list_segments, wire::list_segments_request{});
  REQUIRE(segs.segments.size() == 1);
  CHECK(segs.segments[0].id == mounted.id);
  // A mismatched batch is refused as a whole call, not as a malformed frame.
  auto bad = c.call<wire::put_start_response>(message_type::put_start, wire::put_start_request{keys, {1}, 1, 5});
  CHECK(bad.status == errc::invalid_argument);
  auto cleared = c.call<wire::count_response>(message_type::remove_all, wire::remove_all_request{});
  CHECK(cleared.status == errc::success);
  CHECK(cleared.count == 2);
  CHECK(c.call<wire::statuses_response>(message_type::exist, wire::keys_request{{"a", "b"}}).results ==
        std::vector<errc>{errc::not_found, errc::not_found});
  CHECK(s.stats().protocol_errors == 0);
}

TEST_CASE("pipelined requests are answered in order with their ids") {
  running_server s;
  raw_client c(s.server.local_endpoint());
  for (std::uint64_t id = 100; id < 110; ++id) c.send(wire::message_type::register_node, wire::node_request{id}, id);
  for (std::uint64_t id = 100; id < 110; ++id) {
    wire::response r;
    auto h = c.receive(r);
    CHECK(h.request_id == id);
    CHECK(std::get<wire::status_response>(r).status == errc::success);
  }
  CHECK(s.service->nodes().size() == 10);
}

TEST_CASE("a malformed frame closes that connection only: the server keeps serving") {
  running_server s;
  raw_client good(s.server.local_endpoint());
  raw_client bad_magic(s.server.local_endpoint());
  raw_client count_bomb(s.server.local_endpoint());
  raw_client truncated(s.server.local_endpoint());

  std::array<std::byte, wire::header_size> garbage{};
  garbage.fill(std::byte{0x41});
  asio::write(bad_magic.socket, asio::buffer(garbage));
  CHECK(bad_magic.closed_by_server());

  // A keys request announcing 65,536 keys in a 4-byte payload.
  std::vector<std::byte> frame(wire::header_size);
  const auto h = wire::encode_header({wire::message_type::exist, false, 1, 4});
  std::copy(h.begin(), h.end(), frame.begin());
  for (unsigned b : {0x00u, 0x00u, 0x01u, 0x00u}) frame.push_back(static_cast<std::byte>(b));
  asio::write(count_bomb.socket, asio::buffer(frame));
  CHECK(count_bomb.closed_by_server());

  // Half a header, then the client disappears.
  asio::write(truncated.socket, asio::buffer(garbage.data(), 7));
  truncated.socket.close();

  CHECK(good.call<wire::status_response>(wire::message_type::register_node, wire::node_request{1}).status ==
        errc::success);
  raw_client later(s.server.local_endpoint());
  CHECK(later.call<wire::status_response>(wire::message_type::heartbeat, wire::node_request{1}).status ==
        errc::success);
  CHECK(s.stats().protocol_errors == 2);
}

TEST_CASE("a data-plane frame sent to the master is refused as a call in the shape its sender expects") {
  running_server s;
  raw_client c(s.server.local_endpoint());
  auto r = c.call<wire::data_read_response>(wire::message_type::data_read, wire::data_read_request{{{1, 0, 10, 1}}});
  CHECK(r.status == errc::invalid_argument);
  auto rdma = c.call<wire::rdma_connect_response>(wire::message_type::rdma_connect, wire::rdma_connect_request{});
  CHECK(rdma.status == errc::invalid_argument);
  CHECK(c.call<wire::status_response>(wire::message_type::register_node, wire::node_request{2}).status ==
        errc::success);  // still open
}

TEST_CASE("the master's timer runs maintenance: a silent remote node dies") {
  meta::service_options o;
  o.node_ttl = 50ms;
  asio::io_context io;
  auto service = std::make_shared<meta::service>(o);
  master_server server(io.get_executor(), service, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
                       master_options{{}, 10ms});
  server.start();
  std::thread runner([&] { io.run(); });
  {
    raw_client c(server.local_endpoint());
    CHECK(c.call<wire::status_response>(wire::message_type::register_node, wire::node_request{9}).status ==
          errc::success);
    std::this_thread::sleep_for(200ms);  // no heartbeat
    CHECK(c.call<wire::status_response>(wire::message_type::heartbeat, wire::node_request{9}).status ==
          errc::node_unknown);
  }
  asio::post(io, [&] { server.stop(); });
  runner.join();
}
