// The metadata server over real TCP on 127.0.0.1: the protocol end to end,
// pipelining, and malformed input closing only the connection that sent it.

#include <corokv/net/follower_link.hpp>
#include <corokv/net/master_server.hpp>
#include <corokv/net/replication_hub.hpp>

#include <boost/asio/use_future.hpp>

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
  void send(wire::message_type type, const M& message, std::uint64_t id, std::uint64_t term = 0) {
    std::vector<std::byte> frame(wire::header_size);
    REQUIRE(wire::encode(message, frame) == errc::success);
    const auto h =
        wire::encode_header({type, false, id, static_cast<std::uint32_t>(frame.size() - wire::header_size), term});
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

// ------------------------------------------------------------ replication

namespace {

// A leading master: its service journals into a replication hub, which is
// also the server's role (term 3, always allowed to answer unless fenced).
struct leading_server {
  asio::io_context io;
  std::shared_ptr<meta::service> service = std::make_shared<meta::service>();
  std::shared_ptr<replication_hub> hub;
  master_server server{io.get_executor(), service, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::thread runner;

  explicit leading_server(replication_hub_options o = {}) {
    hub = std::make_shared<replication_hub>(io.get_executor(), service, o);
    hub->set_term(3);
    service->set_journal(hub.get());
    server.set_role(hub.get());
    server.start();
    runner = std::thread([this] { io.run(); });
  }
  ~leading_server() {
    asio::post(io, [this] {
      hub->stop();
      server.stop();
    });
    runner.join();
  }
  template <class F>
  auto on_io(F f) {
    std::promise<decltype(f())> p;
    asio::post(io, [&] { p.set_value(f()); });
    return p.get_future().get();
  }
  replication_hub_stats hub_stats() { return hub->stats(); }
};

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// put_start + put_end of `keys` (100 bytes each) through a raw client.
std::vector<version_t> put_keys(raw_client& c, const std::vector<std::string_view>& keys) {
  using wire::message_type;
  auto started = c.call<wire::put_start_response>(message_type::put_start,
                                                  wire::put_start_request{keys, std::vector<std::uint64_t>(keys.size(), 100), 1, 0});
  REQUIRE(started.results.size() == keys.size());
  std::vector<version_t> versions;
  for (auto& r : started.results) {
    REQUIRE(r.ok());
    versions.push_back(r.version);
  }
  auto ended = c.call<wire::statuses_response>(message_type::put_end, wire::versioned_keys_request{keys, versions});
  for (auto e : ended.results) REQUIRE(e == errc::success);
  return versions;
}

}  // namespace

TEST_CASE("replication: a put acknowledged by the leader is already in its follower's copy, which promotes") {
  leading_server leader;
  raw_client c(leader.server.local_endpoint());
  using wire::message_type;
  REQUIRE(c.call<wire::mount_response>(message_type::mount_segment, wire::mount_request{5, 1 << 20, 0, {}, false})
              .status == errc::success);
  const std::vector<std::string_view> before{"before-0", "before-1"};
  const auto before_versions = put_keys(c, before);  // reaches the follower in its snapshot

  asio::io_context follower_io;
  follower_link link(follower_io.get_executor());
  meta::replica_state copy;
  auto ended = asio::co_spawn(follower_io, link.follow(leader.server.local_endpoint(), "f1", copy, 3, 1s),
                              asio::use_future);
  std::thread follower_thread([&] { follower_io.run(); });
  REQUIRE(eventually([&] { return leader.hub_stats().in_sync == 1; }));

  std::vector<std::string> names;
  for (int i = 0; i < 50; ++i) names.push_back("after-" + std::to_string(i));
  const std::vector<std::string_view> after(names.begin(), names.end());
  const auto after_versions = put_keys(c, after);
  {
    // The replies came back: the follower has applied the commits already.
    std::lock_guard lock(link.copy_mutex());
    for (std::size_t i = 0; i < after.size(); ++i) {
      const auto* o = copy.lookup(after[i]);
      REQUIRE(o);
      CHECK(o->committed);
      CHECK(o->version == after_versions[i]);
    }
    CHECK(copy.lookup("before-1"));
    CHECK(copy.unmatched() == 0);
  }
  // Every reply carries the leader's term.
  c.send(message_type::exist, wire::keys_request{before}, 9);
  wire::response r;
  CHECK(c.receive(r).term == 3);
  CHECK(leader.hub_stats().waits > 0);
  CHECK(leader.hub_stats().max_lag == 0);

  asio::post(follower_io, [&] { link.stop(); });
  CHECK(ended.get() != errc::success);
  follower_thread.join();
  CHECK(link.stats().snapshots == 1);

  auto promoted = copy.promote({}, meta::steady_clock_source());
  std::vector<std::string_view> all(before);
  all.insert(all.end(), after.begin(), after.end());
  std::vector<query_result> found(all.size());
  const std::vector<std::string> all_keys(all.begin(), all.end());
  REQUIRE(promoted->query(all_keys, found) == errc::success);
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO(all[i]);
    CHECK(found[i].ok());
    CHECK(found[i].version == (i < 2 ? before_versions[i] : after_versions[i - 2]));
  }
  CHECK(promoted->check_invariants() == "");
}

TEST_CASE("replication: a follower that stops acknowledging is cut off after ack_timeout, and replies go on") {
  replication_hub_options o;
  o.ack_timeout = 200ms;
  leading_server leader(o);
  raw_client c(leader.server.local_endpoint());
  using wire::message_type;
  REQUIRE(c.call<wire::mount_response>(message_type::mount_segment, wire::mount_request{5, 1 << 20, 0, {}, false})
              .status == errc::success);
  // A follower that acknowledges its snapshot and then nothing.
  raw_client silent(leader.server.local_endpoint());
  silent.send(message_type::follow, wire::follow_request{"silent"}, 1);
  for (;;) {
    wire::response r;
    silent.receive(r);
    const auto& batch = std::get<wire::replication_batch>(r);
    if (batch.phase != wire::replication_phase::snapshot_end) continue;
    silent.send(message_type::replica_ack, wire::replica_ack_request{batch.seq}, 2);
    break;
  }
  REQUIRE(eventually([&] { return leader.hub_stats().in_sync == 1; }));
  // A reply on another connection, even a read's, waits for what is
  // pending: it could reflect a change the follower does not have yet.
  const auto t0 = std::chrono::steady_clock::now();
  c.send(message_type::put_start, wire::put_start_request{{"k"}, {100}, 1, 0}, 7);  // its reply waits
  raw_client reader(leader.server.local_endpoint());
  std::this_thread::sleep_for(20ms);
  CHECK(reader.call<wire::statuses_response>(message_type::exist, wire::keys_request{{"other"}}).results[0] ==
        errc::not_found);
  CHECK(std::chrono::steady_clock::now() - t0 >= 200ms);
  wire::response started;
  c.receive(started);
  const auto version = std::get<wire::put_start_response>(started).results.at(0).version;
  std::vector<errc> ended_ok = c.call<wire::statuses_response>(message_type::put_end,
                                                               wire::versioned_keys_request{{"k"}, {version}})
                                   .results;
  CHECK(ended_ok == std::vector<errc>{errc::success});
  CHECK(leader.hub_stats().followers_cut_off == 1);
  CHECK(leader.hub_stats().followers == 0);
  // With no follower left, nothing waits.
  const auto t1 = std::chrono::steady_clock::now();
  put_keys(c, {"k2"});
  CHECK(std::chrono::steady_clock::now() - t1 < 200ms);
  // What it was sent before it was cut off, then the end of the connection.
  std::vector<std::byte> rest(1 << 16);
  boost::system::error_code ec;
  while (!ec) silent.socket.read_some(asio::buffer(rest), ec);
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));
}

TEST_CASE("replication: an ack beyond what was sent is a protocol error that drops only that follower") {
  leading_server leader;
  raw_client bad(leader.server.local_endpoint());
  bad.send(wire::message_type::follow, wire::follow_request{"liar"}, 1);
  for (;;) {
    wire::response r;
    bad.receive(r);
    if (std::get<wire::replication_batch>(r).phase == wire::replication_phase::snapshot_end) break;
  }
  bad.send(wire::message_type::replica_ack, wire::replica_ack_request{1'000'000}, 2);
  CHECK(bad.closed_by_server());
  raw_client c(leader.server.local_endpoint());
  CHECK(c.call<wire::status_response>(wire::message_type::register_node, wire::node_request{5}).status ==
        errc::success);
  CHECK(leader.hub_stats().followers == 0);
}

TEST_CASE("a fenced master closes connections unanswered, and a request from a newer term reaches its role") {
  leading_server leader;
  std::atomic<bool> fenced{false};
  std::atomic<std::uint64_t> newer{0};
  leader.on_io([&] {
    leader.hub->set_fence([&] { return !fenced.load(); });
    leader.hub->set_on_newer_term([&](std::uint64_t t) { newer = t; });
    return 0;
  });
  raw_client c(leader.server.local_endpoint());
  c.send(wire::message_type::register_node, wire::node_request{5}, 1, 4);
  wire::response r;
  CHECK(c.receive(r).term == 3);
  CHECK(newer.load() == 4);
  fenced = true;
  raw_client d(leader.server.local_endpoint());
  d.send(wire::message_type::register_node, wire::node_request{6}, 1);
  CHECK(d.closed_by_server());
  CHECK(leader.on_io([&] { return leader.server.stats().refused; }) == 1);
}

TEST_CASE("a lone master refuses follow and replica_ack by closing that connection") {
  running_server s;
  raw_client f(s.server.local_endpoint());
  f.send(wire::message_type::follow, wire::follow_request{"x"}, 1);
  CHECK(f.closed_by_server());
  raw_client a(s.server.local_endpoint());
  a.send(wire::message_type::replica_ack, wire::replica_ack_request{1}, 1);
  CHECK(a.closed_by_server());
  CHECK(s.stats().protocol_errors == 2);
}
