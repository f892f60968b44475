// The metadata server over real TCP on 127.0.0.1: the protocol end to end,
// pipelining, and malformed input closing only the connection that sent it.

#include <corokv/net/follower_link.hpp>
#include <corokv/net/master_server.hpp>
#include <corokv/net/one_exchange.hpp>
#include <corokv/net/replication_hub.hpp>

#include <boost/asio/use_future.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <doctest/doctest.h>

#include <future>
#include <optional>
#include <thread>

namespace asio = boost::asio;
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

// A follower_link following `leader` on a thread of its own, into `copy`.
struct running_follower {
  asio::io_context io;
  follower_link link{io.get_executor()};
  meta::replica_state copy;
  std::future<errc> ended;
  std::thread runner;

  running_follower(const tcp::endpoint& leader, std::string name, std::uint64_t term = 3) {
    ended = asio::co_spawn(io, link.follow(leader, std::move(name), copy, term, 1s), asio::use_future);
    runner = std::thread([this] { io.run(); });
  }
  ~running_follower() {
    asio::post(io, [this] { link.stop(); });
    runner.join();
  }
};

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
  replication_hub_options two;
  two.log.sync_followers = 2;  // both followers below hold every acknowledged change
  leading_server leader(two);
  raw_client c(leader.server.local_endpoint());
  using wire::message_type;
  running_follower first(leader.server.local_endpoint(), "f0");
  REQUIRE(eventually([&] { return leader.hub_stats().followers == 1; }));
  // One follower of the two required: the leader answers nothing yet, not
  // even for the state it started with.
  c.send(message_type::mount_segment, wire::mount_request{5, 1 << 20, 0, {}, false}, 1);
  std::this_thread::sleep_for(50ms);
  CHECK(c.socket.available() == 0);

  asio::io_context follower_io;
  follower_link link(follower_io.get_executor());
  meta::replica_state copy;
  CHECK_FALSE(link.position().whole);
  auto ended = asio::co_spawn(follower_io, link.follow(leader.server.local_endpoint(), "f1", copy, 3, 1s),
                              asio::use_future);
  std::thread follower_thread([&] { follower_io.run(); });
  REQUIRE(eventually([&] { return leader.hub_stats().in_sync == 2; }));
  wire::response mounted;
  c.receive(mounted);
  REQUIRE(std::get<wire::mount_response>(mounted).status == errc::success);
  const std::vector<std::string_view> before{"before-0", "before-1"};
  const auto before_versions = put_keys(c, before);

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
  const auto position = link.position();
  CHECK(position.whole);
  CHECK(position.term == 3);
  CHECK(position.applied == leader.on_io([&] { return leader.hub->position(); }));
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

TEST_CASE("replication: a follower that stops acknowledging is cut off, the replies that waited are dropped, and a follower that catches up lets replies go out again") {
  replication_hub_options o;
  o.ack_timeout = 200ms;
  leading_server leader(o);
  using wire::message_type;
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
  raw_client c(leader.server.local_endpoint());
  // The mount is journaled; its reply waits for the silent follower.
  const auto t0 = std::chrono::steady_clock::now();
  c.send(message_type::mount_segment, wire::mount_request{5, 1 << 20, 0, {}, false}, 7);
  // A reply on another connection, even a read's, waits for what is
  // pending: it could reflect a change the follower does not have yet.
  raw_client reader(leader.server.local_endpoint());
  std::this_thread::sleep_for(20ms);
  reader.send(message_type::exist, wire::keys_request{{"other"}}, 1);
  // Neither is acknowledged: after ack_timeout both connections close
  // unanswered, and the silent follower is cut off.
  CHECK(c.closed_by_server());
  CHECK(std::chrono::steady_clock::now() - t0 >= 200ms);
  CHECK(reader.closed_by_server());
  CHECK(leader.hub_stats().followers_cut_off == 1);
  CHECK(leader.hub_stats().followers == 0);
  CHECK(leader.hub_stats().not_replicated == 2);
  // What it was sent before it was cut off, then the end of the connection.
  std::vector<std::byte> rest(1 << 16);
  boost::system::error_code ec;
  while (!ec) silent.socket.read_some(asio::buffer(rest), ec);
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));

  // With no follower, nothing is acknowledged; a follower that joins brings
  // the mount (made, never acknowledged) into its copy, and replies go out.
  raw_client d(leader.server.local_endpoint());
  d.send(message_type::register_node, wire::node_request{5}, 1);
  running_follower f(leader.server.local_endpoint(), "f");
  wire::response registered;
  CHECK(d.receive(registered).term == 3);
  CHECK(std::get<wire::status_response>(registered).status == errc::success);
  CHECK(f.link.position().whole);
  put_keys(d, {"k2"});
  std::lock_guard lock(f.link.copy_mutex());
  CHECK(f.copy.lookup("k2"));
  CHECK(f.copy.segments() == 1);
}

namespace {

// A leader scripted frame by frame, for one follow connection at a time.
// Used from a thread of its own: it asserts nothing, the test checks what
// it recorded.
struct scripted_leader {
  asio::io_context io;
  tcp::acceptor acceptor{io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  tcp::socket socket{io};
  std::vector<std::optional<std::uint64_t>> acks;  // what each ack() read: nullopt once the follower closed

  tcp::endpoint endpoint() const { return acceptor.local_endpoint(); }
  // Accepts the next follower and reads its `follow`.
  void accept() {
    socket = tcp::socket(io);
    acceptor.accept(socket);
    frame();
  }
  // A replication frame registering `nodes`, in term 3.
  void send(wire::replication_phase phase, std::vector<node_id> nodes, std::uint64_t seq = 0) {
    wire::replication_batch batch;
    batch.phase = phase;
    batch.seq = seq;
    for (node_id n : nodes) {
      meta::journal_record r;
      r.kind = meta::journal_kind::node_registered;
      r.node = n;
      batch.records.push_back(wire::log_record::of(r));
    }
    std::vector<std::byte> out;
    append_frame(wire::message_type::follow, true, 1, batch, out);
    wire::stamp_term(out, 3);
    boost::system::error_code ec;
    asio::write(socket, asio::buffer(out), ec);
  }
  // Reads the follower's next ack into `acks`.
  void ack() {
    const auto payload = frame();
    wire::replica_ack_request a;
    if (payload && wire::decode(*payload, a) == errc::success)
      acks.push_back(a.applied);
    else
      acks.push_back(std::nullopt);
  }

 private:
  std::optional<std::vector<std::byte>> frame() {
    std::array<std::byte, wire::header_size> head{};
    boost::system::error_code ec;
    asio::read(socket, asio::buffer(head), ec);
    wire::frame_header h;
    if (ec || wire::decode_header(head, {}, h) != errc::success) return std::nullopt;
    std::vector<std::byte> payload(h.payload_size);
    asio::read(socket, asio::buffer(payload), ec);
    if (ec) return std::nullopt;
    return payload;
  }
};

}  // namespace

TEST_CASE("replication: a follower keeps its copy until a new snapshot has arrived whole, and acknowledges one only once its owner has published it") {
  scripted_leader leader;
  asio::io_context io;
  follower_link link(io.get_executor());
  meta::replica_state copy;
  std::vector<meta::copy_position> published;
  bool publish_ok = true, ack_ok = true;
  link.on_snapshot([&](meta::copy_position p) -> asio::awaitable<bool> {
    published.push_back(p);
    co_return publish_ok;
  });
  link.may_ack([&] { return ack_ok; });
  auto follow = [&] {
    return asio::co_spawn(io, link.follow(leader.endpoint(), "f", copy, 3, 1s), asio::use_future);
  };
  auto run_until = [&](std::future<errc>& f) {
    io.restart();
    while (f.wait_for(0s) != std::future_status::ready) io.run_one_for(10ms);
  };
  using wire::replication_phase;
  using acks = std::vector<std::optional<std::uint64_t>>;
  {
    // A whole snapshot of nodes 1 and 2 at position 5, then record 6.
    auto ended = follow();
    std::thread script([&] {
      leader.accept();
      leader.send(replication_phase::snapshot_start, {1});
      leader.send(replication_phase::snapshot_end, {2}, 5);
      leader.ack();
      leader.send(replication_phase::log, {3}, 6);
      leader.ack();
      leader.socket.close();
    });
    run_until(ended);
    script.join();
    CHECK(ended.get() == errc::rpc_failed);
    CHECK(leader.acks == acks{5, 6});
    REQUIRE(published.size() == 1);
    CHECK(published[0] == meta::copy_position{true, 3, 5});  // published before the ack
    CHECK(link.position() == meta::copy_position{true, 3, 6});
    CHECK(copy.nodes() == 3);
  }
  {
    // A leader that dies halfway through its snapshot takes nothing away.
    auto ended = follow();
    std::thread script([&] {
      leader.accept();
      leader.send(replication_phase::snapshot_start, {7});
      leader.send(replication_phase::snapshot_part, {8});
      leader.socket.close();
    });
    run_until(ended);
    script.join();
    CHECK(ended.get() == errc::rpc_failed);
    CHECK(link.position() == meta::copy_position{true, 3, 6});
    CHECK(copy.nodes() == 3);
    CHECK(published.size() == 1);
  }
  {
    // The owner could not publish: the snapshot is not acknowledged.
    publish_ok = false;
    leader.acks.clear();
    auto ended = follow();
    std::thread script([&] {
      leader.accept();
      leader.send(replication_phase::snapshot_start, {9});
      leader.send(replication_phase::snapshot_end, {}, 2);
      leader.ack();
    });
    run_until(ended);
    script.join();
    CHECK(ended.get() == errc::rpc_failed);
    CHECK(leader.acks == acks{std::nullopt});
    CHECK(published.size() == 2);
    CHECK(link.position() == meta::copy_position{true, 3, 2});
    CHECK(copy.nodes() == 1);  // whole, just not acknowledged
  }
  {
    // Acks held back: none goes out.
    publish_ok = true;
    ack_ok = false;
    leader.acks.clear();
    auto ended = follow();
    std::thread script([&] {
      leader.accept();
      leader.send(replication_phase::snapshot_start, {10});
      leader.send(replication_phase::snapshot_end, {}, 4);
      leader.ack();
    });
    run_until(ended);
    script.join();
    CHECK(ended.get() == errc::rpc_failed);
    CHECK(leader.acks == acks{std::nullopt});
    CHECK(published.size() == 3);
  }
}

TEST_CASE("replication: an ack beyond what was sent is a protocol error that drops only that follower") {
  replication_hub_options o;
  o.log.sync_followers = 0;  // the leader answers alone once the liar is gone
  leading_server leader(o);
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
  replication_hub_options o;
  o.log.sync_followers = 0;
  leading_server leader(o);
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

namespace {

// A register_node asked of `peer` as one exchange; the outcome, the
// response, and how long it took.
struct exchanged {
  errc outcome = errc::success;  // set by the exchange
  wire::status_response response;
  duration took{};
};
asio::awaitable<exchanged> register_once(tcp::endpoint peer, duration timeout) {
  auto ex = co_await asio::this_coro::executor;
  auto socket = std::make_shared<tcp::socket>(ex);
  exchanged out;
  const auto began = clock_type::now();
  out.outcome = co_await connect_and_exchange(socket, peer, wire::message_type::register_node, wire::node_request{5},
                                              out.response, timeout);
  out.took = clock_type::now() - began;
  co_return out;
}
asio::awaitable<bool> connect_once(tcp::endpoint peer) {
  auto ex = co_await asio::this_coro::executor;
  auto socket = std::make_shared<tcp::socket>(ex);
  co_return co_await connect_within(socket, peer, 1s);
}

}  // namespace

TEST_CASE("one exchange: connect, one framed request and its reply within a deadline, and a silent peer is cut off at it") {
  running_server s;
  asio::io_context io;
  auto answered = asio::co_spawn(io, register_once(s.server.local_endpoint(), 2s), asio::use_future);
  // Listening, never reading or answering: the connect succeeds (the
  // kernel's backlog), the reply never comes.
  tcp::acceptor silent(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto unanswered = asio::co_spawn(io, register_once(silent.local_endpoint(), 100ms), asio::use_future);
  // Nothing listens there any more: refused.
  tcp::endpoint gone;
  {
    tcp::acceptor closed(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    gone = closed.local_endpoint();
  }
  auto refused = asio::co_spawn(io, connect_once(gone), asio::use_future);
  auto reached = asio::co_spawn(io, connect_once(s.server.local_endpoint()), asio::use_future);
  io.run();
  const exchanged a = answered.get();
  CHECK(a.outcome == errc::success);
  CHECK(a.response.status == errc::success);
  const exchanged u = unanswered.get();
  CHECK(u.outcome == errc::rpc_failed);
  CHECK(u.took >= 100ms);
  CHECK(u.took < 2s);
  CHECK_FALSE(refused.get());
  CHECK(reached.get());
}
