// Reads that finish after their lease, while a replica they read leaves an
// object that lives on: memory released after a disk copy, a disk copy
// dropped by disk eviction, a segment unmounted, a node declared dead. In
// each case the replica's bytes are given to something else while the read
// is held in flight, the read copies them, and the store must not report
// them as the key's: re-validation names the replica that was read.
//
// The disk tier runs in the metadata service as it does with a real disk;
// the "disk" here is memory of the test's registered under the disk
// segment's id, so its replicas are read by memcpy and the test writes what
// a tier would. (tests/disk runs the same paths with io_uring and a file.)

#include "../support/embedded_store.hpp"

#include <algorithm>
#include <cstring>

namespace asio = boost::asio;
using namespace corokv;
using namespace corokv::test;

namespace {

struct late_read_fixture : store_fixture<delayed_transport> {
  std::shared_ptr<memory::segment_registry> registry = process_segments(store.transport());
  // A second client in this process: it shares the service and reads and
  // writes the same memory.
  basic_store<embedded_metadata, local_transport> other{io.get_executor(), embedded_metadata(service),
                                                        local_transport(memcpy_lane(registry)),
                                                        store_options{.clock = clock.source()}};
  std::vector<std::vector<std::byte>> owned;  // memory of segments mounted by hand

  // Mounts memory of the test's for `node` (memory or disk tier), reachable
  // by both stores.
  segment_id mount_owned(node_id node, std::uint64_t size, storage_tier tier = storage_tier::memory) {
    const auto r = service->mount_segment(node, size, {}, 0, false, tier);
    REQUIRE(r.status == errc::success);
    owned.emplace_back(size);
    registry->add(r.id, owned.back().data(), size);
    return r.id;
  }

  std::span<std::byte> bytes_of(const replica_descriptor& r) {
    auto pinned = registry->pin(r.segment, r.offset, r.length);
    REQUIRE(pinned.bytes.size() == r.length);
    return pinned.bytes;  // the memory outlives the test: owned or the store's
  }
  void write(const replica_descriptor& r, const std::string& value) {
    std::memcpy(bytes_of(r).data(), value.data(), value.size());
  }

  // The tier's part of a demotion of `node`'s oldest objects: copy, report.
  std::vector<demotion> demote(node_id node) {
    demotion_work work;
    REQUIRE(service->demote_start(node, 16, UINT64_MAX, 0, 0, work) == errc::success);
    std::vector<std::string> keys;
    std::vector<version_t> versions;
    for (const auto& d : work.copies) {
      std::memcpy(bytes_of(d.to).data(), bytes_of(d.from).data(), d.to.length);
      keys.push_back(d.key);
      versions.push_back(d.version);
    }
    std::vector<errc> copied(keys.size(), errc::success), out(keys.size());
    REQUIRE(service->demote_end(keys, versions, copied, out) == errc::success);
    for (auto e : out) REQUIRE(e == errc::success);
    return work.copies;
  }

  asio::awaitable<std::vector<errc>> other_put(const std::string& key, const std::string& value) {
    std::vector<std::string> keys{key};
    std::vector<asio::const_buffer> values{asio::buffer(value)};
    co_return co_await other.batch_put(keys, values);
  }

  // batch_get of one key with `q`, its transfer held until `meanwhile` ran.
  get_result held_read(const std::string& key, const query_result& q, std::string& out,
                       std::function<asio::awaitable<void>()> meanwhile) {
    store.transport().control().before_copy = std::move(meanwhile);
    std::vector<std::string> keys{key};
    std::vector<query_result> given{q};
    std::vector<asio::mutable_buffer> buffers{asio::buffer(out)};
    auto got = run([&]() -> asio::awaitable<std::vector<get_result>> {
      co_return co_await store.batch_get(keys, given, buffers);
    }());
    store.transport().control().before_copy = nullptr;
    REQUIRE(got.size() == 1);
    return got[0];
  }

  // A put with two replicas.
  errc put_twice(const std::string& key, const std::string& value) {
    std::vector<std::string> keys{key};
    std::vector<asio::const_buffer> values{asio::buffer(value)};
    return run([&]() -> asio::awaitable<std::vector<errc>> {
      co_return co_await store.batch_put(keys, values, put_options{2});
    }())[0];
  }

  query_result query_one(const std::string& key) {
    auto q = query({key});
    REQUIRE(q[0].ok());
    return q[0];
  }
};

}  // namespace

TEST_CASE("a late read of memory released after a disk copy is never reported with the intruder's bytes") {
  late_read_fixture f;
  const segment_id memory = f.add_segment(4096);
  const segment_id disk = f.mount_owned(f.store.node(), 1 << 20, storage_tier::disk);
  const std::string victim = value_for(1, 4096, 'a'), intruder = value_for(2, 4096, 'z');
  REQUIRE(f.put({"victim"}, {victim})[0] == errc::success);
  REQUIRE(f.demote(f.store.node()).size() == 1);
  const query_result q = f.query_one("victim");
  REQUIRE(q.replicas.size() == 2);
  REQUIRE(q.replicas[0].segment == memory);  // read first: memory
  REQUIRE(q.replicas[1].segment == disk);

  std::string out(4096, '\0');
  std::vector<errc> intruder_put;
  const get_result got = f.held_read("victim", q, out, [&]() -> asio::awaitable<void> {
    f.clock.advance(6s);  // the lease ends while the read is in flight...
    intruder_put = co_await f.other_put("intruder", intruder);  // ...memory eviction releases the victim's memory
  });
  REQUIRE(intruder_put == std::vector<errc>{errc::success});
  const query_result taken = f.query_one("intruder");
  CHECK(taken.replicas[0].segment == q.replicas[0].segment);
  CHECK(taken.replicas[0].offset == q.replicas[0].offset);
  CHECK(f.query_one("victim").version == q.version);  // the object lives on, on disk
  CHECK(out == intruder);                             // the copy did read the intruder...
  CHECK(got.status == errc::lease_expired);           // ...and it is not reported as the victim's
  CHECK(f.store.counters().keys_revalidated == 1);
  CHECK(f.store.counters().lease_expiries == 1);

  // Read again: from disk now, the victim's own bytes.
  std::string again(4096, '\0');
  const get_result fresh = f.held_read("victim", f.query_one("victim"), again, nullptr);
  CHECK(fresh.ok());
  CHECK(again == victim);
}

TEST_CASE("a late read of a disk copy that disk eviction dropped and gave to another object's copy fails") {
  late_read_fixture f;
  f.add_segment(4096);
  f.mount_owned(f.store.node(), 4096, storage_tier::disk);  // room for one copy
  const std::string victim = value_for(1, 4096, 'a'), next = value_for(2, 4096, 'n');
  REQUIRE(f.put({"victim"}, {victim})[0] == errc::success);
  REQUIRE(f.demote(f.store.node()).size() == 1);
  f.clock.advance(6s);
  REQUIRE(f.run(f.other_put("next", next)) == std::vector<errc>{errc::success});  // victim: on disk only
  const query_result q = f.query_one("victim");
  REQUIRE(q.replicas.size() == 1);

  std::string out(4096, '\0');
  const get_result got = f.held_read("victim", q, out, [&]() -> asio::awaitable<void> {
    f.clock.advance(6s);
    // The next demotion needs the full disk: the victim's copy is dropped
    // and its extent written with next's bytes.
    const auto copies = f.demote(f.store.node());
    CHECK(copies.size() == 1);
    CHECK(copies.at(0).to.offset == q.replicas[0].offset);
    co_return;
  });
  CHECK(out == next);
  CHECK(got.status == errc::lease_expired);
  CHECK_FALSE(got.ok());
}

TEST_CASE("a late read of a replica on a segment unmounted meanwhile fails, though the object lives on elsewhere") {
  late_read_fixture f;
  const segment_id first = f.mount_owned(f.store.node(), 4096);
  const segment_id second = f.mount_owned(f.store.node(), 4096);
  const std::string victim = value_for(1, 4096, 'a'), reused = value_for(3, 4096, 'r');
  REQUIRE(f.put_twice("victim", victim) == errc::success);
  const query_result q = f.query_one("victim");
  REQUIRE(q.replicas.size() == 2);
  const replica_descriptor read_from = q.replicas[0];

  std::string out(4096, '\0');
  const get_result got = f.held_read("victim", q, out, [&]() -> asio::awaitable<void> {
    f.clock.advance(6s);
    // The owner takes that memory back and puts it to other use.
    CHECK(f.service->unmount_segment(read_from.segment) == errc::success);
    f.write(read_from, reused);
    co_return;
  });
  CHECK((read_from.segment == first || read_from.segment == second));
  CHECK(out == reused);
  CHECK(got.status == errc::lease_expired);
  const query_result now = f.query_one("victim");  // it lives on, on the other segment
  CHECK(now.replicas.size() == 1);
  CHECK(now.replicas[0].segment != read_from.segment);
}

TEST_CASE("a late read of a replica on a node declared dead meanwhile fails, though the object lives on elsewhere") {
  late_read_fixture f;
  const node_id peer = 777;
  REQUIRE(f.service->register_node(peer) == errc::success);  // expires: it must heartbeat
  f.add_segment(4096);
  const segment_id peer_segment = f.mount_owned(peer, 4096);
  const std::string victim = value_for(1, 4096, 'a'), reused = value_for(4, 4096, 'd');
  REQUIRE(f.put_twice("victim", victim) == errc::success);
  query_result q = f.query_one("victim");
  REQUIRE(q.replicas.size() == 2);
  // Read the peer's replica first (the caller orders the replicas it hands in).
  if (q.replicas[0].segment != peer_segment) std::swap(*q.replicas.begin(), *(q.replicas.begin() + 1));
  const replica_descriptor read_from = q.replicas[0];
  REQUIRE(read_from.segment == peer_segment);

  std::string out(4096, '\0');
  const get_result got = f.held_read("victim", q, out, [&]() -> asio::awaitable<void> {
    f.clock.advance(2h);  // past node_ttl: the peer fell silent
    CHECK(f.service->maintain().dead_nodes == 1);
    f.write(read_from, reused);  // its process lives on and reuses the memory
    co_return;
  });
  CHECK(out == reused);
  CHECK(got.status == errc::lease_expired);
  CHECK(f.query_one("victim").replicas.size() == 1);
}
