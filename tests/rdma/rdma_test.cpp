// The RDMA verbs lane on a real device: cluster stores in one process, a
// master and nodes on 127.0.0.1, moving their bytes by RDMA READ and WRITE
// through the device (Soft-RoCE, rxe0, inside the VM that tests/rdma/vm.sh
// boots; any device with an active port elsewhere). Without a device the
// binary says so and exits 77, which ctest counts as skipped.

#define DOCTEST_CONFIG_IMPLEMENT
#include "../support/doctest_main.hpp"

#include <corokv/rdma.hpp>

#include "../support/cluster.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <doctest/doctest.h>

#include <cstring>

using namespace cluster_support;

namespace {

rdma_cluster_options rdma_node(std::uint16_t master_port, std::vector<std::string> lanes = {}) {
  rdma_cluster_options o;
  o.master.port = master_port;
  o.master.request_timeout = 2s;
  o.master.heartbeat_interval = 100ms;
  o.transport.shared_memory = false;  // one process: same-host mapping would win over RDMA
  o.transport.lanes = std::move(lanes);
  o.rdma.required = true;
  return o;
}

lane_counters lane_of(rdma_cluster_store& kv, std::string_view name) {
  for (const lane_counters& l : kv.transport().counters_by_lane())
    if (l.name == name) return l;
  FAIL("no lane " << name);
  return {};
}

// A master, a node that owns a segment, one that writes and one that reads.
struct three_nodes {
  master_process master;
  io_thread clients;
  rdma_cluster_store owner, writer, reader;
  explicit three_nodes(std::vector<std::string> lanes = {}, store_options reader_store = {},
                       rdma_lane_options reader_rdma = {})
      : owner(make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, lanes))),
        writer(make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, lanes))),
        reader(make_rdma_cluster_store(clients.io.get_executor(),
                                       tuned(rdma_node(master.port, lanes), reader_store, reader_rdma))) {
    auto [ec, id] = wait(owner.add_segment(64 << 20, asio::deferred));
    REQUIRE(!ec);
  }
  static rdma_cluster_options tuned(rdma_cluster_options o, store_options s, rdma_lane_options r) {
    o.store = s;
    r.required = true;
    o.rdma = r;
    return o;
  }
};

}  // namespace

TEST_CASE("rdma: a put on one node and a get on another move every byte by RDMA, on no thread of the library") {
  const std::size_t threads_before = thread_count();
  three_nodes n;  // every lane allowed: the router itself prefers RDMA to TCP
  CHECK(n.writer.transport().lane<rdma_lane>().available());
  dataset d("rdma-", 16, 64 * 1024);
  const std::uint64_t total = 16u * 64 * 1024;

  put_all(n.writer, d);
  CHECK(lane_of(n.writer, "rdma").bytes_written == total);
  CHECK(lane_of(n.writer, "tcp").bytes_written == 0);

  check_read_back(n.reader, d);  // into unregistered buffers: registered for the batch
  CHECK(lane_of(n.reader, "rdma").bytes_read == total);
  CHECK(lane_of(n.reader, "tcp").bytes_read == 0);
  const auto stats = n.reader.transport().lane<rdma_lane>().stats();
  CHECK(stats.connections == 1);  // one queue pair to the owner
  CHECK(stats.ad_hoc_registrations == 16);
  CHECK(stats.work_requests == 16);
  CHECK(n.owner.transport().lane<rdma_lane>().stats().accepted == 2);

  // Into memory the store owns (its registered pool), with query results.
  auto [qec, query] = wait(n.reader.batch_query(d.keys, asio::deferred));
  REQUIRE(!qec);
  auto [gec, handles] = wait(n.reader.batch_get(d.keys, query, asio::deferred));
  REQUIRE(!gec);
  for (std::size_t i = 0; i < handles.size(); ++i) {
    REQUIRE(handles[i].ok());
    CHECK(std::memcmp(handles[i].buffer.data(), d.values[i].data(), d.values[i].size()) == 0);
  }
  // Into a region registered once with register_buffer.
  std::vector<char> region(16 * 64 * 1024);
  REQUIRE(!n.reader.register_buffer(asio::buffer(region)));
  std::vector<asio::mutable_buffer> slots;
  for (std::size_t i = 0; i < 16; ++i) slots.push_back(asio::buffer(region.data() + i * 64 * 1024, 64 * 1024));
  auto [rec, results] = wait(n.reader.batch_get(d.keys, query, slots, asio::deferred));
  REQUIRE(!rec);
  for (std::size_t i = 0; i < 16; ++i) {
    CHECK(results[i].ok());
    CHECK(std::memcmp(region.data() + i * 64 * 1024, d.values[i].data(), 64 * 1024) == 0);
  }
  CHECK(n.reader.transport().lane<rdma_lane>().stats().ad_hoc_registrations == 16);  // none more
  CHECK(lane_of(n.reader, "rdma").bytes_read == 3 * total);

  // The owner reads its own segment by memcpy, not through its device.
  check_read_back(n.owner, d);
  CHECK(lane_of(n.owner, "memcpy").bytes_read == total);
  CHECK(lane_of(n.owner, "rdma").bytes_read == 0);
  CHECK(thread_count() == threads_before + 2);  // the test's own io threads, nothing more
}

TEST_CASE("rdma: a batch longer than the send queue goes out in chains, each with one signalled work request") {
  rdma_lane_options small_queue;
  small_queue.send_queue_depth = 64;  // 200 work requests: the rest go out as completions free slots
  three_nodes n({"rdma"}, {}, small_queue);
  dataset d("chain-", 200, 4096);
  put_all(n.writer, d);
  check_read_back(n.reader, d);
  const auto stats = n.reader.transport().lane<rdma_lane>().stats();
  CHECK(stats.work_requests == 200);
  CHECK(stats.chains == (200 + 31) / 32);  // chain_length 32
  CHECK(stats.chain_completions == stats.chains);  // one signalled work request per chain
  CHECK(lane_of(n.reader, "rdma").bytes_read == 200u * 4096);
}

TEST_CASE("rdma: a batch whose replicas live on two nodes goes to both, a queue pair each") {
  master_process master;
  io_thread clients;
  auto first = make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, {"rdma"}));
  auto second = make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, {"rdma"}));
  auto reader = make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, {"rdma"}));
  // Two segments of 1 MiB and 24 values of 64 KiB: neither holds them all.
  auto [e1, s1] = wait(first.add_segment(1 << 20, asio::deferred));
  auto [e2, s2] = wait(second.add_segment(1 << 20, asio::deferred));
  REQUIRE(!e1);
  REQUIRE(!e2);
  dataset d("two-", 24, 64 * 1024);
  put_all(reader, d);
  check_read_back(reader, d);
  const auto stats = reader.transport().lane<rdma_lane>().stats();
  CHECK(stats.connections == 2);
  CHECK(first.transport().lane<rdma_lane>().stats().accepted == 1);
  CHECK(second.transport().lane<rdma_lane>().stats().accepted == 1);
  CHECK(lane_of(reader, "rdma").bytes_read == 24u * 64 * 1024);
}

TEST_CASE("rdma: a cancelled batch_get completes only when nothing more can be written into the caller's buffers") {
  // Soft-RoCE may carry out a whole chain inside ibv_post_send: with two
  // work requests in flight at a time, the rest are posted as completions
  // come, and the cancellation lands between them, mid-batch.
  rdma_lane_options slow;
  slow.send_queue_depth = 2;
  slow.chain_length = 1;
  three_nodes n({"rdma"}, {}, slow);
  dataset d("cancel-", 16, 1 << 20);  // 16 MiB: long enough on an emulated device to be cancelled in flight
  put_all(n.writer, d);
  check_read_back(n.reader, d);  // the queue pair is up: the cancellation lands in the transfer
  auto [qec, query] = wait(n.reader.batch_query(d.keys, asio::deferred));
  REQUIRE(!qec);

  std::vector<std::vector<char>> out(16, std::vector<char>(1 << 20, 0));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& b : out) buffers.push_back(asio::buffer(b));
  asio::cancellation_signal signal;
  std::promise<boost::system::error_code> done;
  asio::post(n.clients.io, [&] {
    n.reader.batch_get(d.keys, query, buffers,
                       asio::bind_cancellation_slot(signal.slot(), [&](boost::system::error_code ec, std::vector<get_result>) {
                         done.set_value(ec);
                       }));
  });
  std::this_thread::sleep_for(20ms);
  asio::post(n.clients.io, [&] { signal.emit(asio::cancellation_type::terminal); });
  const auto started = std::chrono::steady_clock::now();
  const auto ec = done.get_future().get();
  const auto stats = n.reader.transport().lane<rdma_lane>().stats();
  MESSAGE("completed " << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count()
                       << " ms after the cancellation; work requests " << stats.work_requests << ", chains "
                       << stats.chains << ", queue pair errors " << stats.queue_pair_errors);
  CHECK(ec == errc::cancelled);
  // Nothing lands after completion: a pattern written now stays.
  for (auto& b : out) std::memset(b.data(), 0x5a, b.size());
  std::this_thread::sleep_for(500ms);
  bool untouched = true;
  for (auto& b : out) untouched = untouched && std::all_of(b.begin(), b.end(), [](char c) { return c == 0x5a; });
  CHECK(untouched);
  CHECK(n.reader.transport().lane<rdma_lane>().stats().queue_pair_errors >= 1);

  // The queue pair is rebuilt on next use, and the data is intact.
  check_read_back(n.reader, d);
  CHECK(n.reader.transport().lane<rdma_lane>().stats().connections == 2);
}

TEST_CASE("rdma: a read that outlives its lease is re-validated before it is reported good") {
  store_options short_lease;
  short_lease.lease_ttl = 150ms;  // less than the margin plus an emulated 16 MiB read
  short_lease.lease_margin = 100ms;
  three_nodes n({"rdma"}, short_lease);
  dataset d("lease-", 16, 1 << 20);
  put_all(n.writer, d);
  auto [qec, query] = wait(n.reader.batch_query(d.keys, asio::deferred));
  REQUIRE(!qec);
  std::vector<std::vector<char>> out(16, std::vector<char>(1 << 20));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& b : out) buffers.push_back(asio::buffer(b));
  auto [ec, results] = wait(n.reader.batch_get(d.keys, query, buffers, asio::deferred));
  REQUIRE(!ec);
  const auto counters = n.reader.counters();
  CHECK(counters.keys_revalidated == 16);
  CHECK(counters.lease_expiries == 0);  // nothing changed: every key still good, and checked
  for (std::size_t i = 0; i < 16; ++i) {
    CHECK(results[i].ok());
    CHECK(out[i] == d.values[i]);
  }
}

TEST_CASE("rdma: when the owner goes away, reads fail per key at once and the queue pair is errored") {
  master_process master;
  io_thread clients;
  auto reader = make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, {"rdma"}));
  dataset d("gone-", 8, 64 * 1024);
  std::vector<query_result> query;  // taken while the owner lives
  {
    auto owner = make_rdma_cluster_store(clients.io.get_executor(), rdma_node(master.port, {"rdma"}));
    auto [ec, id] = wait(owner.add_segment(8 << 20, asio::deferred));
    REQUIRE(!ec);
    put_all(reader, d);
    check_read_back(reader, d);
    auto [qec, q] = wait(reader.batch_query(d.keys, asio::deferred));
    REQUIRE(!qec);
    query = q;
  }  // the owner's store ends: its data server closes the link, its memory is deregistered
  std::this_thread::sleep_for(200ms);
  CHECK(reader.transport().lane<rdma_lane>().stats().queue_pair_errors == 1);
  // With query results from before, the read goes straight to the lane,
  // which cannot reach the owner any more: per key, and soon.
  std::vector<std::vector<char>> out(8, std::vector<char>(64 * 1024));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& b : out) buffers.push_back(asio::buffer(b));
  const auto started = std::chrono::steady_clock::now();
  auto [ec, results] = wait(reader.batch_get(d.keys, query, buffers, asio::deferred));
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  REQUIRE(!ec);
  for (const auto& r : results) CHECK(!r.ok());
}

int main(int argc, char** argv) {
  int count = 0;
  ibv_device** list = ibv_get_device_list(&count);
  if (list) ibv_free_device_list(list);
  if (count == 0) {
    std::fprintf(stderr,
                 "corokv_rdma_tests: no RDMA device here: skipped (tests/rdma/vm.sh runs these on Soft-RoCE in a VM)\n");
    return 77;
  }
  return corokv::test::run_tests(argc, argv);
}
