// Cluster stores in one test process, talking over real TCP on 127.0.0.1
// to a master and to each other's data servers: data across nodes over TCP
// and over shared memory, a master restart, lost connections, and malformed
// frames sent to a data server. (tests/cluster/ does the same with separate
// processes.)

#include <corokv/cluster.hpp>
#include <corokv/net/master_server.hpp>

#include "../support/cluster.hpp"
#include "../support/hooked_transport.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include <doctest/doctest.h>

#include <future>
#include <optional>
#include <random>
#include <span>
#include <thread>

using namespace corokv;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace cluster_support;

namespace {

cluster_options test_node_options(std::uint16_t master_port, bool shared_memory) {
  cluster_options o;
  o.master.port = master_port;
  o.master.request_timeout = 500ms;
  o.master.heartbeat_interval = 50ms;
  o.master.reconnect_max = 50ms;
  o.transport.shared_memory = shared_memory;
  return o;
}

// What a transport's TCP lane moved, both ways.
std::uint64_t tcp_bytes_of(const std::vector<lane_counters>& lanes) {
  for (const lane_counters& l : lanes)
    if (l.name == "tcp") return l.bytes_read + l.bytes_written;
  return 0;
}
std::uint64_t tcp_bytes(cluster_store& kv) { return tcp_bytes_of(kv.transport().counters_by_lane()); }

}  // namespace

// Namespaces follow folders (corokv::transport, corokv::memory, ...); the
// names programs called under corokv before keep resolving there, through
// the top-level headers' using-declarations.
TEST_CASE("the names programs call resolve under corokv, each the type of its folder's namespace") {
  static_assert(std::is_same_v<corokv::memcpy_lane, corokv::transport::memcpy_lane>);
  static_assert(std::is_same_v<corokv::tcp_lane_options, corokv::transport::tcp_lane_options>);
  static_assert(std::is_same_v<corokv::store_options, corokv::client::store_options>);
  static_assert(std::is_same_v<corokv::buffer_handle, corokv::memory::buffer_handle>);
  static_assert(std::is_same_v<corokv::cluster_store, corokv::node_store<>>);
  static_assert(corokv::lane<corokv::tcp_lane>);
  corokv::node_transport_options transport;
  transport.process_segments = std::make_shared<corokv::segment_registry>();
  corokv::router_options router;
  router.memory = corokv::segment_memory::shareable;
  CHECK(transport.process_segments != nullptr);
  CHECK(router.memory == corokv::segment_memory::shareable);
  CHECK(corokv::ranks::tcp > corokv::ranks::this_process);
}

TEST_CASE("a value written on one node is read on another over TCP") {
  master_process master;
  io_thread clients;
  auto a = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  auto b = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  auto [seg_ec, seg] = wait(a.add_segment(8 << 20, asio::deferred));
  REQUIRE(!seg_ec);

  dataset d("tcp-", 32, 64 * 1024);
  put_all(b, d);
  CHECK(tcp_bytes(b) == 32u * 64 * 1024);  // b has no segment: every byte went to a

  check_read_back(b, d);
  CHECK(tcp_bytes(b) == 2u * 32 * 64 * 1024);
  CHECK(b.transport().lane<tcp_lane>().stats().exchanges == 2);  // one per node per batch
  check_read_back(a, d);
  CHECK(a.transport().lane<memcpy_lane>().stats().bytes_this_process == 32u * 64 * 1024);
  CHECK(tcp_bytes(a) == 0);

  // remove_all goes through the master: every node sees the objects gone.
  auto [clear_ec, cleared] = wait(b.remove_all(asio::deferred));
  REQUIRE(!clear_ec);
  CHECK(cleared == 32);
  auto [exist_ec, exist] = wait(a.batch_exist(d.keys, asio::deferred));
  REQUIRE(!exist_ec);
  CHECK(std::count(exist.begin(), exist.end(), errc::not_found) == 32);
}

TEST_CASE("a batch with more ranges for one node than a frame may carry takes several exchanges") {
  master_process master;
  io_thread clients;
  auto a = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  cluster_options small = test_node_options(master.port, false);
  small.transport.tcp.limits.max_batch = 4;  // the server accepts more; this client sends at most 4 per frame
  auto b = make_cluster_store(clients.io.get_executor(), small);
  auto [seg_ec, seg] = wait(a.add_segment(4 << 20, asio::deferred));
  REQUIRE(!seg_ec);

  dataset d("split-", 10, 4096);
  put_all(b, d);
  check_read_back(b, d);
  CHECK(tcp_bytes(b) == 2u * 10 * 4096);
}

TEST_CASE("a cluster store starts no thread: connecting, heartbeats and TCP transfers run on the given executor") {
  master_process master;  // its thread, and the clients' below, are the test's own
  io_thread clients;
  const std::size_t before = thread_count();
  cluster_options options = test_node_options(master.port, false);
  options.master.host = "localhost";  // a name: looked up at construction, on this thread
  auto a = make_cluster_store(clients.io.get_executor(), options);
  auto b = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  REQUIRE(!std::get<0>(wait(a.add_segment(1 << 20, asio::deferred))));
  dataset d("threads-", 4, 4096);
  put_all(b, d);
  CHECK(all(read_back(b, d), errc::success));
  CHECK(tcp_bytes(b) == 2u * 4 * 4096);
  std::this_thread::sleep_for(120ms);  // heartbeats go out every 50 ms
  CHECK(thread_count() == before);
}

TEST_CASE("a same-host replica is read through shared memory, without a socket") {
  master_process master;
  io_thread clients;
  auto a = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, true));
  auto b = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, true));
  auto [seg_ec, seg] = wait(a.add_segment(4 << 20, asio::deferred));
  REQUIRE(!seg_ec);
  dataset d("shm-", 16, 32 * 1024);
  put_all(b, d);
  check_read_back(b, d);
  CHECK(b.transport().lane<memcpy_lane>().stats().bytes_same_host == 2u * 16 * 32 * 1024);
  CHECK(tcp_bytes(b) == 0);
  CHECK(a.transport().lane<tcp_lane>().data_server()->stats().bytes_sent == 0);
}

TEST_CASE("after a master restart, nodes remount and go on: a lease from the old master still reads its own bytes") {
  meta::service_options service_options;
  service_options.max_lease_ttl = 2s;  // also how long a remounted segment is held back
  master_process master(service_options);
  const std::uint16_t port = master.port;
  io_thread clients;
  auto a = make_cluster_store(clients.io.get_executor(), test_node_options(port, false));
  cluster_options reader_options = test_node_options(port, false);
  reader_options.store.lease_ttl = 2s;
  auto b = make_cluster_store(clients.io.get_executor(), reader_options);
  auto [seg_ec, seg] = wait(a.add_segment(64 << 10, asio::deferred));  // room for the values twice, no more
  REQUIRE(!seg_ec);
  dataset before("before-", 8, 4096);
  auto [put_ec, put] = wait(b.batch_put(before.keys, before.value_buffers, asio::deferred));
  REQUIRE(!put_ec);
  REQUIRE(all(put, errc::success));
  auto [q_ec, leases] = wait(b.batch_query(before.keys, asio::deferred));  // granted by the old master
  REQUIRE(!q_ec);

  master.stop();
  master.start(port);
  // Within the reconnect backoff the node is back, with its segment.
  for (int i = 0; i < 200 && !(a.metadata().ready() && master.service->segments().size() == 1); ++i)
    std::this_thread::sleep_for(10ms);
  REQUIRE(master.service->segments().size() == 1);
  CHECK(master.service->segments()[0].id == seg);
  CHECK(a.metadata().stats().connects >= 2);

  // The new master knows none of the old objects, and no lease on them. It
  // allocates nothing in the remounted memory while such a lease may live,
  // so a reader holding one still gets the bytes it was granted.
  CHECK(master.service->stats().pool.held == 1);
  dataset after("after-", 8, 4096);
  auto [held_ec, held] = wait(b.batch_put(after.keys, after.value_buffers, asio::deferred));
  REQUIRE(!held_ec);
  CHECK(all(held, errc::replicas_unavailable));
  std::vector<std::vector<char>> out(8, std::vector<char>(4096));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& o : out) buffers.push_back(asio::buffer(o));
  auto [g_ec, got] = wait(b.batch_get(before.keys, leases, buffers, asio::deferred));
  REQUIRE(!g_ec);
  for (std::size_t i = 0; i < 8; ++i) {
    CHECK(got[i].status == errc::success);
    CHECK(out[i] == before.values[i]);
  }

  // Once the hold ends, puts land in that memory again; the old keys are gone.
  for (int i = 0; i < 400 && master.service->stats().pool.held != 0; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(master.service->stats().pool.held == 0);
  put_all(b, after);
  check_read_back(b, after);
  auto [late_ec, late] = wait(b.batch_get(before.keys, leases, buffers, asio::deferred));
  REQUIRE(!late_ec);
  for (auto& r : late) CHECK(r.status == errc::not_found);  // expired: re-queried, and unknown
}

TEST_CASE("a late TCP read of memory released after a disk copy and reused is never reported as the key's bytes") {
  meta::manual_clock clock;
  meta::service_options full_is_fine;
  full_is_fine.high_watermark = 1.0;  // one object fills the segment: only a failed allocation evicts
  master_process master(full_is_fine, clock.source());
  io_thread clients;
  auto owner = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  auto writer = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  // The reader holds its transfers in flight on demand; its leases run on
  // the master's clock.
  using hooked = corokv::test::hooked_transport<cluster_transport>;
  cluster_options reader_options = test_node_options(master.port, false);
  reader_options.store.clock = clock.source();
  auto reader_metadata = make_cluster_metadata(clients.io.get_executor(), reader_options);
  auto lister = reader_metadata.segment_lister();
  basic_store<net::remote_metadata, hooked> reader(
      clients.io.get_executor(), std::move(reader_metadata),
      hooked(make_cluster_transport(clients.io.get_executor(), std::move(lister), reader_options.transport)),
      reader_options.store);

  auto [seg_ec, memory] = wait(owner.add_segment(4096, asio::deferred));  // one object's room
  REQUIRE(!seg_ec);
  const node_id owner_node = owner.node();
  REQUIRE(master.thread.on_thread([&] {
    return master.service->mount_segment(owner_node, 1 << 20, {}, 0, false, storage_tier::disk).status;
  }) == errc::success);
  dataset victim("victim", 1, 4096), intruder("intruder", 1, 4096);
  for (auto& b : intruder.values[0]) b = static_cast<char>(~b);
  put_all(writer, victim);
  // The owner's tier copies it to disk (the service's side of it: the read
  // below is of the memory replica).
  const auto demoted = master.thread.on_thread([&] {
    demotion_work work;
    if (master.service->demote_start(owner_node, 16, UINT64_MAX, 0, 0, work) != errc::success)
      return std::vector<errc>{errc::internal_error};
    std::vector<std::string> keys;
    std::vector<version_t> versions;
    for (auto& d : work.copies) {
      keys.push_back(d.key);
      versions.push_back(d.version);
    }
    std::vector<errc> copied(keys.size(), errc::success), out(keys.size());
    if (master.service->demote_end(keys, versions, copied, out) != errc::success)
      return std::vector<errc>{errc::internal_error};
    return out;
  });
  REQUIRE(demoted.size() == 1);
  REQUIRE(demoted[0] == errc::success);
  auto [q_ec, q] = wait(reader.batch_query(victim.keys, asio::deferred));
  REQUIRE(!q_ec);
  REQUIRE(q[0].replicas.size() == 2);
  REQUIRE(q[0].replicas[0].segment == memory);

  std::vector<errc> intruder_put;
  reader.transport().before_read() = [&]() -> asio::awaitable<void> {
    clock.advance(6s);  // the lease ends while the transfer is in flight...
    intruder_put = co_await writer.batch_put(intruder.keys, intruder.value_buffers);  // ...and the memory is reused
  };
  std::vector<char> out(4096);
  std::vector<asio::mutable_buffer> buffers{asio::buffer(out)};
  auto [g_ec, got] = wait(reader.batch_get(victim.keys, q, buffers, asio::deferred));
  reader.transport().before_read() = nullptr;
  REQUIRE(!g_ec);
  REQUIRE(intruder_put == std::vector<errc>{errc::success});
  CHECK(tcp_bytes_of(reader.transport().counters_by_lane()) == 4096);  // read over TCP
  CHECK(out == intruder.values[0]);               // the transfer did read the intruder's bytes...
  CHECK(got[0].status == errc::lease_expired);    // ...and they are not reported as the victim's
  CHECK(reader.counters().keys_revalidated == 1);
  auto [e_ec, exists] = wait(reader.batch_exist(victim.keys, asio::deferred));
  REQUIRE(!e_ec);
  CHECK(exists[0] == errc::success);  // the victim lives on, on disk
}

TEST_CASE("with the master gone, calls fail with typed errors and leased keys are still read") {
  master_process master;
  io_thread clients;
  auto a = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  auto [seg_ec, seg] = wait(a.add_segment(4 << 20, asio::deferred));
  REQUIRE(!seg_ec);
  dataset d("lease-", 4, 8192);
  auto [put_ec, put] = wait(a.batch_put(d.keys, d.value_buffers, asio::deferred));
  REQUIRE(all(put, errc::success));
  std::vector<std::string> queried(d.keys.begin(), d.keys.begin() + 3);
  auto [q_ec, leased] = wait(a.batch_query(queried, asio::deferred));
  REQUIRE(!q_ec);
  a.cache().clear();

  master.stop();
  const auto started = std::chrono::steady_clock::now();
  auto [e_ec, exists] = wait(a.batch_exist(d.keys, asio::deferred));
  CHECK((e_ec == errc::timeout || e_ec == errc::rpc_failed));
  CHECK(std::chrono::steady_clock::now() - started < 2s);  // request_timeout is 500 ms

  // Three keys have leased metadata, the fourth needs the master: it fails
  // per key, the others are read.
  std::vector<query_result> given(leased.begin(), leased.end());
  given.push_back(query_result{errc::not_found, 0, no_version, {}, {}});
  std::vector<std::vector<char>> out(4, std::vector<char>(8192));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& o : out) buffers.push_back(asio::buffer(o));
  auto [g_ec, got] = wait(a.batch_get(d.keys, given, buffers, asio::deferred));
  REQUIRE(!g_ec);
  for (int i = 0; i < 3; ++i) {
    CHECK(got[i].status == errc::success);
    CHECK(out[i] == d.values[i]);
  }
  CHECK((got[3].status == errc::timeout || got[3].status == errc::rpc_failed));
}

TEST_CASE("a call in flight when the connection breaks fails with rpc_failed") {
  // A fake master that reads one request and hangs up without answering.
  io_thread fake;
  tcp::acceptor acceptor(fake.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const std::uint16_t port = acceptor.local_endpoint().port();
  std::thread hang_up([&] {
    tcp::socket s(fake.io);
    acceptor.accept(s);
    std::array<std::byte, wire::header_size> head{};
    boost::system::error_code ec;
    asio::read(s, asio::buffer(head), ec);
    acceptor.close();  // reconnects are refused from now on
  });
  io_thread clients;
  net::remote_metadata_options o;
  o.port = port;
  o.request_timeout = 2s;
  net::remote_metadata metadata(clients.io.get_executor(), o);
  std::vector<std::string> keys{"k"};
  std::vector<errc> out(1);
  auto result = asio::co_spawn(clients.io, metadata.exist(keys, out), asio::use_future).get();
  CHECK(result == errc::rpc_failed);
  CHECK(metadata.stats().lost_in_flight == 1);
  hang_up.join();
}

TEST_CASE("an io_context destroyed while a call waits for the master destroys the caller's coroutine") {
  // A master that takes requests and never answers.
  io_thread fake;
  tcp::acceptor acceptor(fake.io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const std::uint16_t port = acceptor.local_endpoint().port();
  tcp::socket held(fake.io);
  std::thread accept_one([&] { acceptor.accept(held); });

  auto token = std::make_shared<int>(0);
  {
    asio::io_context io;
    net::remote_metadata_options o;
    o.port = port;
    o.request_timeout = 60s;
    // The caller's coroutine owns the endpoint, and the endpoint's call
    // table owns the waiting coroutine: only the context's shutdown can
    // break that cycle.
    auto metadata = std::make_shared<net::remote_metadata>(io.get_executor(), o);
    asio::co_spawn(
        io,
        [metadata, token]() -> asio::awaitable<void> {
          std::vector<std::string> keys{"k"};
          std::vector<errc> out(1);
          co_await metadata->exist(keys, out);
        },
        asio::detached);
    metadata.reset();
    for (int i = 0; i < 100 && !held.is_open(); ++i) io.run_for(10ms);
    io.run_for(50ms);  // the request goes out and waits
    REQUIRE(held.is_open());
    CHECK(token.use_count() == 2);
  }
  CHECK(token.use_count() == 1);
  accept_one.join();
}

TEST_CASE("addresses that cannot work are refused when the store is made, not discovered by timeouts") {
  io_thread clients;
  cluster_options unknown_master = test_node_options(1, false);
  unknown_master.master.host = "no-such-host.invalid";
  CHECK_THROWS_AS(make_cluster_store(clients.io.get_executor(), unknown_master), boost::system::system_error);

  // An IPv6 address advertised for an IPv4 listener: peers could never connect.
  cluster_options wrong_family = test_node_options(1, false);
  wrong_family.transport.advertise_host = "::1";
  CHECK_THROWS_AS(make_cluster_store(clients.io.get_executor(), wrong_family), boost::system::system_error);
}

TEST_CASE("a data server refuses ranges outside its segments and closes only a malformed connection") {
  master_process master;
  io_thread clients;
  auto a = make_cluster_store(clients.io.get_executor(), test_node_options(master.port, false));
  auto [seg_ec, seg] = wait(a.add_segment(1 << 20, asio::deferred));
  REQUIRE(!seg_ec);
  const tcp::endpoint data = a.transport().lane<tcp_lane>().data_endpoint();

  asio::io_context io;
  // Garbage: that connection is closed.
  tcp::socket bad(io);
  bad.connect(data);
  asio::write(bad, asio::buffer(std::string(32, 'x')));
  std::array<char, 1> one{};
  boost::system::error_code ec;
  bad.read_some(asio::buffer(one), ec);
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));

  // A well-formed read of an in-range and an out-of-range item, on another
  // connection: per-item answers.
  net::data_client client;
  std::vector<std::byte> first(64), second(64);
  std::vector<read_request> reads{{{seg, a.node(), 0, 64}, asio::buffer(first)},
                                  {{seg, a.node(), (1 << 20) - 32, 64}, asio::buffer(second)}};
  std::vector<errc> status(2);
  // The peer is a temporary gone before the coroutine starts: the client
  // keeps its own copy.
  asio::co_spawn(io, client.read({asio::ip::make_address("127.0.0.1"), data.port()}, reads, status), asio::use_future);
  io.run();
  CHECK(status[0] == errc::success);
  CHECK(status[1] == errc::segment_not_found);
  const auto s = a.transport().lane<tcp_lane>().data_server()->stats();
  CHECK(s.protocol_errors == 1);
  CHECK(s.items_refused == 1);
}

TEST_CASE("a data server answers rdma_connect through the handler a lane registers and drops what it holds with the connection") {
  io_thread server_thread;
  auto server = std::make_shared<net::data_server>(server_thread.io.get_executor(), std::make_shared<memory::segment_registry>(),
                                                   tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  server->start();
  const tcp::endpoint at = server->local_endpoint();

  asio::io_context io;
  auto exchange = [&](tcp::socket& socket, const std::vector<std::byte>& frame) {
    asio::write(socket, asio::buffer(frame));
    std::array<std::byte, wire::header_size> head{};
    asio::read(socket, asio::buffer(head));
    wire::frame_header h;
    REQUIRE(wire::decode_header(head, {}, h) == errc::success);
    CHECK(h.type == wire::message_type::rdma_connect);
    CHECK(h.response);
    std::vector<std::byte> payload(h.payload_size);
    asio::read(socket, asio::buffer(payload));
    wire::rdma_connect_response response;
    REQUIRE(wire::decode(payload, response) == errc::success);
    return response;
  };
  wire::rdma_connect_request request;
  request.initiator.qpn = 77;
  std::vector<std::byte> frame;
  REQUIRE(net::append_frame(wire::message_type::rdma_connect, false, 5, request, frame) == errc::success);

  // No RDMA lane on this node: refused as a call, the connection stays open.
  tcp::socket plain(io);
  plain.connect(at);
  CHECK(exchange(plain, frame).status == errc::invalid_argument);
  CHECK(exchange(plain, frame).status == errc::invalid_argument);

  // With one: its answer goes back, and what it returned is held until the
  // connection closes.
  auto held = std::make_shared<int>(1);
  std::weak_ptr<int> watch = held;
  std::uint32_t asked_qpn = 0;
  server->handle(wire::message_type::rdma_connect,
                 net::call_handler<wire::rdma_connect_request>(
                     [&, held](const wire::rdma_connect_request& r, net::data_connection& connection) mutable {
                       asked_qpn = r.initiator.qpn;
                       wire::rdma_connect_response answer;
                       answer.responder.qpn = 99;
                       connection.hold(wire::message_type::rdma_connect, std::move(held));
                       return answer;
                     }));
  held.reset();
  tcp::socket peer(io);
  peer.connect(at);
  const auto answer = exchange(peer, frame);
  CHECK(answer.status == errc::success);
  CHECK(answer.responder.qpn == 99);
  CHECK(asked_qpn == 77);
  server->handle(wire::message_type::rdma_connect, {});  // the handler's own copy goes; the connection's stays
  CHECK(!watch.expired());
  peer.close();
  for (int i = 0; i < 200 && !watch.expired(); ++i) std::this_thread::sleep_for(5ms);
  CHECK(watch.expired());

  // A malformed one (a queue pair number wider than 24 bits) closes that
  // connection only.
  std::vector<std::byte> bad = frame;
  bad[wire::header_size + 16 + 3] = std::byte{0x01};  // qpn's top byte, little-endian
  tcp::socket broken(io);
  broken.connect(at);
  asio::write(broken, asio::buffer(bad));
  std::array<char, 1> one{};
  boost::system::error_code ec;
  broken.read_some(asio::buffer(one), ec);
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));
  CHECK(exchange(plain, frame).status == errc::invalid_argument);
  CHECK(server->stats().protocol_errors == 1);
  server->stop();
}

TEST_CASE("a data server restarted on the same port: the client's pooled connection is replaced, the batch succeeds") {
  io_thread server_thread;
  auto segments = std::make_shared<memory::segment_registry>();
  std::vector<std::byte> memory(4096, std::byte{0x5a});
  segments->add(7, memory.data(), memory.size());
  const tcp::endpoint any(asio::ip::make_address("127.0.0.1"), 0);
  auto server = std::make_shared<net::data_server>(server_thread.io.get_executor(), segments, any);
  server->start();
  const tcp::endpoint at = server->local_endpoint();

  asio::io_context io;
  net::data_client client;
  std::vector<std::byte> into(64);
  std::vector<read_request> reads{{{7, 1, 0, 64}, asio::buffer(into)}};
  std::vector<errc> status(1);
  auto read_once = [&] {
    status[0] = errc::internal_error;
    std::fill(into.begin(), into.end(), std::byte{0});
    auto done = asio::co_spawn(io, client.read(at, reads, status), asio::use_future);
    io.restart();
    io.run();
    done.get();
  };
  read_once();
  REQUIRE(status[0] == errc::success);  // the connection is now pooled

  server->stop();  // closes every connection, the pooled one too
  std::this_thread::sleep_for(50ms);
  auto restarted = std::make_shared<net::data_server>(server_thread.io.get_executor(), segments, at);
  restarted->start();
  read_once();
  CHECK(status[0] == errc::success);
  CHECK(into == std::vector<std::byte>(64, std::byte{0x5a}));
  CHECK(restarted->stats().connections_accepted == 1);
  restarted->stop();
  std::this_thread::sleep_for(20ms);
}

TEST_CASE("bulk transfers move whole gathered and scattered sequences across partial reads and writes") {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket sender(io), receiver(io);
  sender.connect(acceptor.local_endpoint());
  acceptor.accept(receiver);
  // 4 MiB in 300 pieces of odd sizes, some empty, some touching in memory.
  std::vector<char> source(4 << 20), target(4 << 20, 0);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<char>((i * 131 + i / 4099) & 0xff);
  std::vector<asio::const_buffer> gather;
  std::vector<asio::mutable_buffer> scatter;
  std::size_t at = 0;
  for (std::size_t k = 0; at < source.size(); ++k) {
    const std::size_t n = std::min(source.size() - at, (k % 7 == 0) ? std::size_t{0} : 977 + (k * 7919) % 40000);
    gather.push_back(asio::buffer(source.data() + at, n));
    at += n;
  }
  at = 0;
  for (std::size_t k = 0; at < target.size(); ++k) {  // cut differently from the sender's pieces
    const std::size_t n = std::min(target.size() - at, 1 + (k * 104729) % 65536);
    scatter.push_back(asio::buffer(target.data() + at, n));
    at += n;
  }
  std::pair<boost::system::error_code, std::size_t> wrote, read;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { wrote = co_await net::write_fully(sender, gather); }, asio::detached);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { read = co_await net::read_fully(receiver, scatter); }, asio::detached);
  io.run();
  CHECK_FALSE(wrote.first);
  CHECK_FALSE(read.first);
  CHECK(wrote.second == source.size());
  CHECK(read.second == target.size());
  CHECK(source == target);

  // A peer that closes early ends the read with eof, not a hang.
  std::vector<char> more(1024);
  const asio::mutable_buffer one = asio::buffer(more);
  sender.close();
  io.restart();
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { read = co_await net::read_fully(receiver, std::span(&one, 1)); },
                 asio::detached);
  io.run();
  CHECK(read.first == asio::error::eof);
  CHECK(read.second == 0);
}

// ---------------------------------------------------------------- cancellation of data exchanges
// A data_client call is awaited as a store awaits its transport: on a strand
// of an io_context on two threads, with throw_if_cancelled(false), and
// cancelled through a signal emitted on that strand. The peer is scripted
// by the test (blocking sockets on the test's thread), so that the
// cancellation lands exactly at the step named.

namespace {

struct two_io_threads {
  asio::io_context io{2};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread first{[this] { io.run(); }}, second{[this] { io.run(); }};
  ~two_io_threads() {
    work.reset();
    io.stop();
    first.join();
    second.join();
  }
};

// The caller: optionally waits first (a wait the cancellation ends, so that
// the call starts cancelled), then awaits the call.
asio::awaitable<void> as_a_store_awaits(asio::awaitable<void> call, bool wait_first) {
  co_await asio::this_coro::throw_if_cancelled(false);
  if (wait_first) {
    asio::steady_timer wait(co_await asio::this_coro::executor, 10s);
    co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  co_await std::move(call);
}

struct cancellable_call {
  asio::strand<asio::any_io_executor> strand;
  asio::cancellation_signal signal;
  std::future<void> done;

  cancellable_call(asio::io_context& io, asio::awaitable<void> call, bool wait_first = false)
      : strand(asio::make_strand(asio::any_io_executor(io.get_executor()))) {
    done = asio::co_spawn(strand, as_a_store_awaits(std::move(call), wait_first),
                          asio::bind_cancellation_slot(signal.slot(), asio::use_future));
  }
  // Emits on the strand, and returns once it has.
  void cancel() {
    std::promise<void> emitted;
    asio::post(strand, [&] {
      signal.emit(asio::cancellation_type::terminal);
      emitted.set_value();
    });
    emitted.get_future().wait();
  }
  // True if the call ended within `within` (a cancelled call must not wait
  // for io_timeout).
  bool ended(std::chrono::milliseconds within = 5s) {
    if (done.wait_for(within) != std::future_status::ready) return false;
    done.get();
    return true;
  }
};

// A request frame as the peer reads it: header and table.
wire::frame_header read_request_frame(tcp::socket& connection) {
  std::array<std::byte, wire::header_size> head{};
  asio::read(connection, asio::buffer(head));
  wire::frame_header h;
  REQUIRE(wire::decode_header(head, {}, h) == errc::success);
  std::vector<std::byte> table(h.payload_size);
  asio::read(connection, asio::buffer(table));
  return h;
}

// A data_read answer's header and table: every item succeeds with `lengths`.
std::vector<std::byte> read_answer(std::uint64_t id, const std::vector<std::uint64_t>& lengths) {
  wire::data_read_response response;
  response.results.assign(lengths.size(), errc::success);
  response.lengths = lengths;
  std::vector<std::byte> frame;
  REQUIRE(net::append_frame(wire::message_type::data_read, true, id, response, frame) == errc::success);
  return frame;
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> v(size);
  for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<std::byte>((i * 131 + seed * 17) & 0xff);
  return v;
}

// True if the peer's end of `connection` sees it closed (what it still
// holds is drained first).
bool closed_by_client(tcp::socket& connection) {
  std::array<char, 64 * 1024> sink{};
  boost::system::error_code ec;
  while (!ec) connection.read_some(asio::buffer(sink), ec);
  return ec == asio::error::eof || ec == asio::error::connection_reset;
}

// True if a connection waits at `acceptor` (it is not waited for).
bool anyone_connected(tcp::acceptor& acceptor) {
  acceptor.non_blocking(true);
  tcp::socket connection(acceptor.get_executor());
  boost::system::error_code ec;
  acceptor.accept(connection, ec);
  acceptor.non_blocking(false);
  return ec != asio::error::would_block;
}

constexpr auto sentinel = std::byte{0xee};

}  // namespace

TEST_CASE("a data exchange cancelled before, during the send, during the receive and after: cancelled or complete, never abandoned mid-write") {
  two_io_threads client_io;
  asio::io_context peer_io;
  tcp::acceptor acceptor(peer_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const net::data_peer at = acceptor.local_endpoint();
  net::data_client_options options;
  options.io_timeout = 30s;  // a call that ends sooner ended because it was cancelled
  constexpr std::size_t item = 1 << 20;

  SUBCASE("before the connect: nothing is connected, sent or written") {
    net::data_client client(options);
    std::vector<std::byte> into(item, sentinel);
    std::vector<read_request> reads{{{7, 1, 0, item}, asio::buffer(into)}};
    std::vector<errc> status(1, errc::internal_error);
    cancellable_call call(client_io.io, client.read(at, reads, status), /*wait_first=*/true);
    call.cancel();
    REQUIRE(call.ended());
    CHECK(status[0] == errc::cancelled);
    CHECK(into == std::vector<std::byte>(item, sentinel));
    CHECK_FALSE(anyone_connected(acceptor));
  }

  SUBCASE("during the send: a write that has begun is finished, not abandoned mid-frame") {
    // Abandoned, the peer would still write the bytes it had received into
    // a range that the store, its put revoked, gives back.
    net::data_client client(options);
    const std::vector<std::byte> value = pattern(64 << 20, 1);  // more than the socket buffers hold
    std::vector<write_request> writes{{{7, 1, 0, value.size()}, asio::buffer(value)}};
    std::vector<errc> status(1, errc::internal_error);
    cancellable_call call(client_io.io, client.write(at, writes, status));
    tcp::socket connection(peer_io);
    acceptor.accept(connection);  // and read nothing yet: the client's write blocks
    std::this_thread::sleep_for(100ms);
    call.cancel();
    CHECK_FALSE(call.ended(200ms));  // still sending
    const wire::frame_header h = read_request_frame(connection);
    std::vector<std::byte> received(value.size());
    asio::read(connection, asio::buffer(received));
    CHECK(received == value);
    wire::statuses_response answer;
    answer.results = {errc::success};
    std::vector<std::byte> frame;
    REQUIRE(net::append_frame(wire::message_type::data_write, true, h.request_id, answer, frame) == errc::success);
    asio::write(connection, asio::buffer(frame));
    REQUIRE(call.ended());
    CHECK(status[0] == errc::success);  // the peer's answer
  }

  SUBCASE("before the send of a write: nothing is sent") {
    net::data_client client(options);
    const std::vector<std::byte> value = pattern(item, 6);
    std::vector<write_request> writes{{{7, 1, 0, value.size()}, asio::buffer(value)}};
    std::vector<errc> status(1, errc::internal_error);
    cancellable_call call(client_io.io, client.write(at, writes, status), /*wait_first=*/true);
    call.cancel();
    REQUIRE(call.ended());
    CHECK(status[0] == errc::cancelled);
    CHECK_FALSE(anyone_connected(acceptor));
  }

  SUBCASE("during the receive: the read stops, and nothing is written into the buffers after it returned") {
    net::data_client client(options);
    std::vector<std::byte> first(item, sentinel), second(item, sentinel);
    std::vector<read_request> reads{{{7, 1, 0, item}, asio::buffer(first)}, {{7, 1, item, item}, asio::buffer(second)}};
    std::vector<errc> status(2, errc::internal_error);
    cancellable_call call(client_io.io, client.read(at, reads, status));
    tcp::socket connection(peer_io);
    acceptor.accept(connection);
    const wire::frame_header h = read_request_frame(connection);
    const std::vector<std::byte> bytes = pattern(2 * item, 2);
    asio::write(connection, asio::buffer(read_answer(h.request_id, {item, item})));
    asio::write(connection, asio::buffer(bytes.data(), item / 2));  // half of the first item, then a pause
    std::this_thread::sleep_for(100ms);
    call.cancel();
    REQUIRE(call.ended());
    CHECK(status[0] == errc::cancelled);
    CHECK(status[1] == errc::cancelled);
    const std::vector<std::byte> first_then = first, second_then = second;
    boost::system::error_code ec;  // the rest arrives too late: the client has closed the connection
    asio::write(connection, asio::buffer(bytes.data() + item / 2, bytes.size() - item / 2), ec);
    std::this_thread::sleep_for(50ms);
    CHECK(first == first_then);
    CHECK(second == second_then);
    CHECK(second == std::vector<std::byte>(item, sentinel));
    CHECK(std::equal(first.begin() + item / 2, first.end(), std::vector<std::byte>(item / 2, sentinel).begin()));
    CHECK(closed_by_client(connection));
  }

  SUBCASE("after an exchange completed: its answers stand, the next exchange is cancelled") {
    options.limits.max_batch = 1;  // one exchange per item, one after the other
    net::data_client client(options);
    std::vector<std::byte> first(item, sentinel), second(item, sentinel);
    std::vector<read_request> reads{{{7, 1, 0, item}, asio::buffer(first)}, {{7, 1, item, item}, asio::buffer(second)}};
    std::vector<errc> status(2, errc::internal_error);
    cancellable_call call(client_io.io, client.read(at, reads, status));
    tcp::socket connection(peer_io);
    acceptor.accept(connection);
    const std::vector<std::byte> bytes = pattern(item, 3);
    const wire::frame_header h1 = read_request_frame(connection);
    asio::write(connection, asio::buffer(read_answer(h1.request_id, {item})));
    asio::write(connection, asio::buffer(bytes));
    read_request_frame(connection);  // the second exchange waits for its answer
    call.cancel();
    REQUIRE(call.ended());
    CHECK(status[0] == errc::success);
    CHECK(first == bytes);
    CHECK(status[1] == errc::cancelled);
    CHECK(second == std::vector<std::byte>(item, sentinel));
    CHECK(closed_by_client(connection));
  }

  SUBCASE("after the call completed: nothing changes, and the connection is kept for the next call") {
    net::data_client client(options);
    std::vector<std::byte> into(item, sentinel);
    std::vector<read_request> reads{{{7, 1, 0, item}, asio::buffer(into)}};
    std::vector<errc> status(1, errc::internal_error);
    cancellable_call call(client_io.io, client.read(at, reads, status));
    tcp::socket connection(peer_io);
    acceptor.accept(connection);
    const std::vector<std::byte> bytes = pattern(item, 4);
    const wire::frame_header h = read_request_frame(connection);
    asio::write(connection, asio::buffer(read_answer(h.request_id, {item})));
    asio::write(connection, asio::buffer(bytes));
    REQUIRE(call.ended());
    call.cancel();
    std::this_thread::sleep_for(20ms);
    CHECK(status[0] == errc::success);
    CHECK(into == bytes);
    connection.non_blocking(true);
    std::array<char, 1> one{};
    boost::system::error_code ec;
    connection.read_some(asio::buffer(one), ec);
    CHECK(ec == asio::error::would_block);  // still open, idle in the client's pool
  }
}

TEST_CASE("data exchanges cancelled at random moments against a data server: each item is read whole or cancelled") {
  io_thread server_thread;
  auto segments = std::make_shared<memory::segment_registry>();
  constexpr std::size_t item = 16 * 1024, items = 4;
  std::vector<std::byte> memory = pattern(items * item, 5);
  segments->add(7, memory.data(), memory.size());
  auto server = std::make_shared<net::data_server>(server_thread.io.get_executor(), segments,
                                                   tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  server->start();
  two_io_threads client_io;
  net::data_client_options options;
  options.limits.max_batch = 2;  // two exchanges per call
  net::data_client client(options);

  constexpr int rounds = 300;
  struct call_record {
    std::vector<std::byte> into = std::vector<std::byte>(items * item, sentinel);
    std::vector<std::byte> at_return;
    std::vector<errc> status = std::vector<errc>(items, errc::internal_error);
  };
  std::vector<call_record> done(rounds);
  std::mt19937 random(22);
  int whole = 0, cancelled = 0, wrong = 0;
  for (int r = 0; r < rounds; ++r) {
    call_record& x = done[static_cast<std::size_t>(r)];
    std::vector<read_request> reads;
    for (std::size_t k = 0; k < items; ++k)
      reads.push_back({{7, 1, k * item, item}, asio::buffer(x.into.data() + k * item, item)});
    cancellable_call call(client_io.io, client.read(server->local_endpoint(), reads, x.status));
    const bool after = r % 10 == 0;  // some cancellations come only after the call returned
    if (!after) {
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 1500));
      call.cancel();
    }
    REQUIRE(call.ended());
    if (after) call.cancel();
    x.at_return = x.into;
    for (std::size_t k = 0; k < items; ++k) {
      const auto got = std::span(x.into).subspan(k * item, item);
      const auto want = std::span(memory).subspan(k * item, item);
      if (x.status[k] == errc::success)
        wrong += !std::equal(got.begin(), got.end(), want.begin());
      else
        wrong += x.status[k] != errc::cancelled;
    }
    whole += std::all_of(x.status.begin(), x.status.end(), [](errc e) { return e == errc::success; });
    cancelled += std::any_of(x.status.begin(), x.status.end(), [](errc e) { return e == errc::cancelled; });
  }
  std::this_thread::sleep_for(50ms);
  int written_late = 0;
  for (auto& x : done) written_late += x.into != x.at_return;
  CHECK(wrong == 0);
  CHECK(written_late == 0);
  CHECK(whole >= rounds / 10);
  CHECK(cancelled > 0);
  MESSAGE(whole << " whole, " << cancelled << " cancelled of " << rounds);
  server->stop();
}
