// Behaviour of the metadata service, one behaviour per case, on a manual clock.

#include "../support/service_fixture.hpp"

#include <algorithm>

#include <set>
#include <thread>

using namespace corokv;
using namespace corokv::test;

TEST_CASE("a put is invisible until put_end, then queryable with its size and replicas") {
  service_fixture f;
  f.mount(1, 1 << 20);
  std::vector<std::string> keys{"k"};
  auto started = f.start(keys, 1000);
  REQUIRE(started[0].ok());
  CHECK(f.query(keys)[0].status == errc::not_found);
  CHECK(f.exist(keys)[0] == errc::not_found);
  CHECK(f.end(keys, started)[0] == errc::success);
  auto q = f.query(keys)[0];
  CHECK(q.ok());
  CHECK(q.size == 1000);
  CHECK(q.version == started[0].version);
  CHECK(q.replicas == started[0].replicas);
  CHECK(q.lease_deadline == f.clock.now() + 5s);
  f.check();
}

TEST_CASE("results are aligned with the input keys") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.put({"b"}, 200);
  auto q = f.query({"a", "b", "c"});
  CHECK(q[0].status == errc::not_found);
  CHECK(q[1].ok());
  CHECK(q[1].size == 200);
  CHECK(q[2].status == errc::not_found);
}

TEST_CASE("bad keys fail only themselves, in every operation") {
  service_fixture f;
  f.mount(1, 1 << 20);
  const std::string too_long(max_key_length + 1, 'x');
  std::vector<std::string> keys{"good", "", too_long, "good", "other"};
  std::vector<std::uint64_t> sizes{100, 100, 100, 100, 0};
  std::vector<put_start_result> started(keys.size());
  REQUIRE(f.svc.put_start(keys, sizes, {}, 0, started) == errc::success);
  CHECK(started[0].ok());
  CHECK(started[1].status == errc::invalid_key);
  CHECK(started[2].status == errc::invalid_key);
  CHECK(started[3].status == errc::duplicate_key);  // later occurrence fails, first proceeds
  CHECK(started[4].status == errc::invalid_argument);  // zero size
  std::vector<version_t> versions{started[0].version, 0, 0, started[0].version, 0};
  std::vector<errc> ended(keys.size());
  REQUIRE(f.svc.put_end(keys, versions, ended) == errc::success);
  CHECK(ended[0] == errc::success);
  CHECK(ended[1] == errc::invalid_key);
  CHECK(ended[3] == errc::duplicate_key);
  CHECK(ended[4] == errc::not_found);

  auto q = f.query(keys);
  CHECK(q[0].ok());
  CHECK(q[1].status == errc::invalid_key);
  CHECK(q[2].status == errc::invalid_key);
  CHECK(q[3].status == errc::duplicate_key);
  auto e = f.exist(keys);
  CHECK(e[0] == errc::success);
  CHECK(e[3] == errc::duplicate_key);
  auto r = f.remove({"good", "good", ""});
  CHECK(r[0] == errc::success);
  CHECK(r[1] == errc::duplicate_key);
  CHECK(r[2] == errc::invalid_key);
  f.check();
}

TEST_CASE("spans of the wrong length fail the whole call and write nothing") {
  service_fixture f;
  f.mount(1, 1 << 20);
  std::vector<std::string> keys{"a", "b"};
  std::vector<query_result> short_out(1);
  CHECK(f.svc.query(keys, short_out) == errc::invalid_argument);
  std::vector<std::uint64_t> sizes{1};
  std::vector<put_start_result> out(2);
  CHECK(f.svc.put_start(keys, sizes, {}, 0, out) == errc::invalid_argument);
  std::vector<std::uint64_t> sizes2{1, 1};
  CHECK(f.svc.put_start(keys, sizes2, put_options{0}, 0, out) == errc::invalid_argument);
  CHECK(f.svc.put_start(keys, sizes2, put_options{max_replicas + 1}, 0, out) == errc::invalid_argument);
  CHECK(f.svc.stats().pending_puts == 0);
}

TEST_CASE("putting a committed key answers already_exists: a pending one put_in_progress") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.put({"done"}, 100);
  auto pending = f.start({"busy"}, 100);
  REQUIRE(pending[0].ok());
  auto again = f.start({"done", "busy"}, 100);
  CHECK(again[0].status == errc::already_exists);
  CHECK(again[1].status == errc::put_in_progress);
  f.check();
}

TEST_CASE("put_end is idempotent and checks the version") {
  service_fixture f;
  f.mount(1, 1 << 20);
  auto started = f.start({"k"}, 100);
  CHECK(f.end({"k"}, started)[0] == errc::success);
  CHECK(f.end({"k"}, started)[0] == errc::success);  // a retried commit
  std::vector<errc> out(1);
  std::vector<version_t> wrong{started[0].version + 1};
  REQUIRE(f.svc.put_end(std::vector<std::string>{"k"}, wrong, out) == errc::success);
  CHECK(out[0] == errc::version_mismatch);
}

TEST_CASE("put_revoke frees the reservation: a committed object cannot be revoked") {
  service_fixture f;
  f.mount(1, 1 << 20);
  auto started = f.start({"k"}, 4096);
  CHECK(f.used() == 4096);
  std::vector<errc> out(1);
  std::vector<version_t> v{started[0].version};
  REQUIRE(f.svc.put_revoke(std::vector<std::string>{"k"}, v, out) == errc::success);
  CHECK(out[0] == errc::success);
  CHECK(f.used() == 0);
  auto v2 = f.put({"k"}, 100);
  REQUIRE(f.svc.put_revoke(std::vector<std::string>{"k"}, v2, out) == errc::success);
  CHECK(out[0] == errc::already_exists);
  f.check();
}

TEST_CASE("replicas land on distinct segments, on distinct nodes when possible") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.mount(1, 1 << 20);
  f.mount(2, 1 << 20);
  f.mount(3, 1 << 20);
  auto keys = make_keys("r", 50);
  auto started = f.start(keys, 1000, 3);
  for (auto& s : started) {
    REQUIRE(s.ok());
    REQUIRE(s.replicas.size() == 3);
    std::set<segment_id> segs;
    std::set<node_id> nodes;
    for (auto& r : s.replicas) {
      segs.insert(r.segment);
      nodes.insert(r.node);
      CHECK(r.length == 1000);
    }
    CHECK(segs.size() == 3);
    CHECK(nodes.size() == 3);  // three nodes exist, so three nodes are used
  }
  f.check();
}

TEST_CASE("more replicas than segments fails that key with replicas_unavailable") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.mount(2, 1 << 20);
  auto started = f.start({"k"}, 100, 3);
  CHECK(started[0].status == errc::replicas_unavailable);
  CHECK(f.used() == 0);
  auto two = f.start({"k"}, 100, 2);
  CHECK(two[0].ok());
}

TEST_CASE("query grants a lease: deadline = max(deadline, now + ttl)") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.put({"k"}, 100);
  const auto t0 = f.clock.now();
  std::vector<std::string> keys{"k"};
  std::vector<query_result> out(1);
  REQUIRE(f.svc.query(keys, 20s, out) == errc::success);
  CHECK(out[0].lease_deadline == t0 + 20s);
  f.clock.advance(1s);
  REQUIRE(f.svc.query(keys, 5s, out) == errc::success);  // shorter: keeps the longer deadline
  CHECK(out[0].lease_deadline == t0 + 20s);
  f.clock.advance(18s);
  REQUIRE(f.svc.query(keys, 5s, out) == errc::success);  // extends past it
  CHECK(out[0].lease_deadline == t0 + 24s);
}

TEST_CASE("a lease blocks eviction: once it ends the object can be evicted") {
  meta::service_options o = small_options();
  service_fixture f(o);
  f.mount(1, 64 * 10);
  f.put({"leased"}, 64 * 5);
  f.query({"leased"});  // lease for 5s
  f.put({"other"}, 64 * 2);
  // Needs 6 units; 3 free. Evicting "other" makes 5: "leased" is not evictable.
  auto blocked = f.start({"big"}, 64 * 6);
  CHECK(blocked[0].status == errc::no_space);
  CHECK(f.exist({"leased"})[0] == errc::success);
  CHECK(f.exist({"other"})[0] == errc::not_found);  // evicted trying to make room
  f.clock.advance(6s);  // lease over
  auto now_fits = f.start({"big"}, 64 * 6);
  CHECK(now_fits[0].ok());
  CHECK(f.exist({"leased"})[0] == errc::not_found);
  f.check();
}

TEST_CASE("remove while leased hides the key at once, but its memory waits for the lease") {
  service_fixture f;
  f.mount(1, 64 * 4);
  f.put({"k"}, 64 * 4);  // fills the segment
  auto q = f.query({"k"});
  REQUIRE(q[0].ok());
  CHECK(f.remove({"k"})[0] == errc::success);
  CHECK(f.query({"k"})[0].status == errc::not_found);
  CHECK(f.exist({"k"})[0] == errc::not_found);
  CHECK(f.svc.stats().removed_leased == 1);
  // The space is still held: a put of the same size cannot get it, even with
  // eviction and maintenance, until the lease ends.
  CHECK(f.start({"k2"}, 64 * 4)[0].status == errc::no_space);
  f.clock.advance(4s);
  f.svc.maintain();
  CHECK(f.start({"k3"}, 64 * 4)[0].status == errc::no_space);
  f.clock.advance(1s);  // exactly at the deadline: the lease has ended
  auto report = f.svc.maintain();
  CHECK(report.reclaimed_removed == 1);
  CHECK(f.used() == 0);
  CHECK(f.start({"k4"}, 64 * 4)[0].ok());
  f.check();
}

TEST_CASE("remove without a lease frees the memory at once") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.put({"k"}, 1000);
  CHECK(f.used() == 1024);
  CHECK(f.remove({"k", "missing"}) == std::vector<errc>{errc::success, errc::not_found});
  CHECK(f.used() == 0);
}

TEST_CASE("remove_all hides every committed object, leased memory waits for its lease and pending puts commit") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.put({"a", "b", "c"}, 1000);
  REQUIRE(f.query({"b"})[0].ok());  // b is leased for 5 s
  auto pending = f.start({"p"}, 1000);
  REQUIRE(pending[0].ok());
  CHECK(f.svc.remove_all() == 3);
  CHECK(f.exist({"a", "b", "c"}) == std::vector<errc>{errc::not_found, errc::not_found, errc::not_found});
  CHECK(f.svc.stats().objects == 0);
  CHECK(f.svc.stats().removed_leased == 1);
  CHECK(f.used() == 2 * 1024);  // b's memory (leased) and p's reservation
  CHECK(f.end({"p"}, pending)[0] == errc::success);
  CHECK(f.exist({"p"})[0] == errc::success);
  CHECK(f.svc.remove_all() == 1);
  f.clock.advance(5s);
  f.svc.maintain();
  CHECK(f.used() == 0);
  CHECK(f.svc.remove_all() == 0);
  f.check();
}

TEST_CASE("exist grants no lease and does not refresh LRU") {
  service_fixture f;
  f.mount(1, 64 * 4);
  f.put({"probed"}, 64 * 4);
  CHECK(f.exist({"probed"})[0] == errc::success);
  CHECK(f.exist_prefix_matches({"probed"}) == 1);
  // Unleased despite the probes: evicted to make room.
  CHECK(f.start({"new"}, 64 * 4)[0].ok());
  CHECK(f.exist({"probed"})[0] == errc::not_found);
}

TEST_CASE("exist_prefix counts the leading keys that exist and says what stopped it") {
  service_fixture f;
  f.mount(1, 1 << 20);
  f.put({"p0", "p1", "p2", "p4"}, 100);
  auto r = f.svc.exist_prefix(std::vector<std::string>{"p0", "p1", "p2", "p3", "p4"});
  CHECK(r.matched == 3);
  CHECK(r.stopped_by == errc::not_found);
  auto all = f.svc.exist_prefix(std::vector<std::string>{"p0", "p1"});
  CHECK(all.matched == 2);
  CHECK(all.stopped_by == errc::success);
  auto dup = f.svc.exist_prefix(std::vector<std::string>{"p0", "p0", "p1"});
  CHECK(dup.matched == 1);
  CHECK(dup.stopped_by == errc::duplicate_key);
  auto bad = f.svc.exist_prefix(std::vector<std::string>{"p0", ""});
  CHECK(bad.matched == 1);
  CHECK(bad.stopped_by == errc::invalid_key);
  CHECK(f.svc.exist_prefix(key_span{}).matched == 0);
}

TEST_CASE("eviction follows LRU order") {
  service_fixture f;
  f.mount(1, 64 * 8);
  f.put({"a", "b", "c", "d"}, 128);  // full: 8 units
  f.clock.advance(6s);               // no leases from the puts anyway
  f.query({"a"});                    // a is now the most recently used...
  f.clock.advance(6s);               // ...and its lease has ended
  // Needs 2 units: evicts down to the low watermark (50%): b, then c go.
  CHECK(f.start({"e"}, 128)[0].ok());
  CHECK(f.exist({"a", "b", "c", "d"}) == std::vector<errc>{errc::success, errc::not_found, errc::not_found, errc::success});
  f.check();
}

TEST_CASE("a batch that needs more than the low watermark leaves: eviction makes room for every key of it") {
  meta::service_options o = small_options();
  o.high_watermark = 0.95;
  o.low_watermark = 0.85;
  service_fixture f(o);
  f.mount(1, 64 * 32);
  f.put(make_keys("old", 30), 64);  // 30 of 32 units
  f.clock.advance(6s);
  // 8 more: 2 fit; the other 6 need 6 units, more than the 15% the low
  // watermark would free.
  const auto started = f.start(make_keys("new", 8), 64);
  for (const auto& r : started) CHECK(r.ok());
  f.check();
}

TEST_CASE("usage above the high watermark evicts down to the low watermark") {
  meta::service_options o = small_options();
  o.high_watermark = 0.9;
  o.low_watermark = 0.5;
  service_fixture f(o);
  f.mount(1, 64 * 100);
  auto keys = make_keys("w", 90);
  f.put(keys, 64);  // 90%: not above the high watermark
  CHECK(f.svc.stats().objects == 90);
  CHECK(f.svc.stats().evicted_total == 0);
  f.put({"one-more"}, 64);  // 91%
  auto s = f.svc.stats();
  CHECK(s.pool.used <= 64 * 50);
  CHECK(s.pool.used > 64 * 40);  // evicts only as far as needed
  CHECK(s.evicted_total == 91 - s.objects);
  CHECK(f.exist({"one-more"})[0] == errc::success);  // the newest stays
  CHECK(f.exist({"w0"})[0] == errc::not_found);      // the oldest went first
  f.check();
}

TEST_CASE("an object larger than any segment fails with no_space without evicting") {
  service_fixture f;
  f.mount(1, 64 * 4);
  f.put({"keep"}, 64);
  CHECK(f.start({"huge"}, 64 * 5)[0].status == errc::no_space);
  CHECK(f.exist({"keep"})[0] == errc::success);
}

TEST_CASE("a pending put times out and frees its space") {
  service_fixture f;  // put_timeout 10s
  f.mount(1, 64 * 4);
  auto started = f.start({"k"}, 64 * 4);
  REQUIRE(started[0].ok());
  CHECK(f.svc.stats().pending_puts == 1);
  f.clock.advance(9s);
  CHECK(f.svc.maintain().expired_puts == 0);
  f.clock.advance(1s);
  CHECK(f.svc.maintain().expired_puts == 1);
  CHECK(f.used() == 0);
  CHECK(f.end({"k"}, started)[0] == errc::not_found);  // too late: nothing to commit
  CHECK(f.query({"k"})[0].status == errc::not_found);
  f.check();
}

TEST_CASE("put_end after the timeout but before maintenance fails with timeout") {
  service_fixture f;
  f.mount(1, 64 * 4);
  auto started = f.start({"k"}, 64);
  f.clock.advance(10s);
  CHECK(f.end({"k"}, started)[0] == errc::timeout);
  CHECK(f.used() == 0);
  CHECK(f.query({"k"})[0].status == errc::not_found);
}

TEST_CASE("re-put after remove gets a new version: validate tells them apart") {
  service_fixture f;
  f.mount(1, 1 << 20);
  auto v1 = f.put({"k"}, 100);
  CHECK(f.remove({"k"})[0] == errc::success);
  auto v2 = f.put({"k"}, 100);
  CHECK(v2[0] != v1[0]);
  CHECK(v2[0] > v1[0]);
  std::vector<std::string> keys{"k", "k2"};
  std::vector<errc> out(2);
  const replica_descriptor read_from = f.query({"k"})[0].replicas[0];
  std::vector<replica_descriptor> replicas{read_from, read_from};
  std::vector<version_t> old_versions{v1[0], 1};
  REQUIRE(f.svc.validate(keys, old_versions, replicas, out) == errc::success);
  CHECK(out[0] == errc::version_mismatch);
  CHECK(out[1] == errc::not_found);
  std::vector<version_t> new_versions{v2[0], 1};
  REQUIRE(f.svc.validate(keys, new_versions, replicas, out) == errc::success);
  CHECK(out[0] == errc::success);
  // The same range under another epoch is another placement of the bytes.
  replicas[0].epoch = v1[0];
  REQUIRE(f.svc.validate(keys, new_versions, replicas, out) == errc::success);
  CHECK(out[0] == errc::lease_expired);
  std::vector<replica_descriptor> short_list{read_from};
  CHECK(f.svc.validate(keys, new_versions, short_list, out) == errc::invalid_argument);
}

TEST_CASE("validate names the replica read: one unmounted or lost with its node fails, the others stand") {
  meta::service_options o = small_options();
  o.node_ttl = 3s;
  service_fixture f(o);
  const segment_id a = f.mount(1, 4096);
  const segment_id b = f.mount(2, 4096);
  const segment_id c = f.mount(3, 4096);
  auto v = f.put({"multi"}, 1024, 3);
  const auto q = f.query({"multi"})[0];
  REQUIRE(q.replicas.size() == 3);
  auto on = [&](segment_id s) {
    return *std::find_if(q.replicas.begin(), q.replicas.end(), [&](const replica_descriptor& r) { return r.segment == s; });
  };
  auto check_read = [&](const replica_descriptor& r) {
    std::vector<std::string> keys{"multi"};
    std::vector<errc> out(1);
    REQUIRE(f.svc.validate(keys, v, std::span<const replica_descriptor>(&r, 1), out) == errc::success);
    return out[0];
  };
  for (auto s : {a, b, c}) CHECK(check_read(on(s)) == errc::success);
  REQUIRE(f.svc.unmount_segment(a) == errc::success);
  CHECK(check_read(on(a)) == errc::lease_expired);  // the object lives on; that memory is its owner's again
  CHECK(check_read(on(b)) == errc::success);
  // Node 2 falls silent and is declared dead; nodes 1 and 3 heartbeat.
  f.clock.advance(2s);
  REQUIRE(f.svc.heartbeat(1) == errc::success);
  REQUIRE(f.svc.heartbeat(3) == errc::success);
  f.clock.advance(2s);
  CHECK(f.svc.maintain().dead_nodes == 1);
  CHECK(check_read(on(b)) == errc::lease_expired);
  CHECK(check_read(on(c)) == errc::success);
  // Segment a's memory mounted again under the same id, and the same range
  // placed for another object: the old descriptor still does not validate.
  REQUIRE(f.svc.mount_segment(1, 4096, {}, a).id == a);
  f.put({"other"}, 1024);
  CHECK(check_read(on(a)) == errc::lease_expired);
  f.check();
}

TEST_CASE("a node silent for node_ttl is dead: segments, replicas, objects and its puts go") {
  meta::service_options o = small_options();
  o.node_ttl = 3s;
  service_fixture f(o);
  REQUIRE(f.svc.register_node(3) == errc::success);
  f.mount(1, 1 << 20);
  f.mount(2, 1 << 20);
  auto both = f.put({"both"}, 100, 2);          // replicas on nodes 1 and 2
  f.svc.register_node(1);
  auto started = f.start({"only1"}, 100, 1);    // rotating placement: find which node
  REQUIRE(started[0].ok());
  f.end({"only1"}, started);
  auto pending_by_3 = f.start({"from3"}, 100, 1, 3);  // node 3 writes, then dies
  REQUIRE(pending_by_3[0].ok());
  const node_id victim = started[0].replicas[0].node;
  const node_id survivor = victim == 1 ? 2 : 1;

  f.clock.advance(2s);
  CHECK(f.svc.heartbeat(survivor) == errc::success);
  f.clock.advance(2s);  // victim and node 3 silent for 4s > 3s
  auto report = f.svc.maintain();
  CHECK(report.dead_nodes == 2);
  CHECK(f.svc.heartbeat(victim) == errc::node_unknown);
  CHECK(f.svc.heartbeat(3) == errc::node_unknown);
  CHECK(f.svc.segments().size() == 1);
  auto q = f.query({"both", "only1"});
  REQUIRE(q[0].ok());
  CHECK(q[0].replicas.size() == 1);  // lost one replica, kept the other
  CHECK(q[0].replicas[0].node == survivor);
  CHECK(q[1].status == errc::not_found);  // its only replica was on the dead node
  CHECK(f.end({"from3"}, pending_by_3)[0] == errc::not_found);  // revoked with its writer
  CHECK(f.svc.stats().pending_puts == 0);
  f.check();
}

TEST_CASE("heartbeat of an unknown node answers node_unknown: put_start from one fails") {
  service_fixture f;
  f.mount(1, 1 << 20);
  CHECK(f.svc.heartbeat(42) == errc::node_unknown);
  std::vector<std::string> keys{"k"};
  std::vector<std::uint64_t> sizes{10};
  std::vector<put_start_result> out(1);
  CHECK(f.svc.put_start(keys, sizes, {}, 42, out) == errc::node_unknown);
  CHECK(f.svc.register_node(0) == errc::invalid_argument);
}

TEST_CASE("unmount drops the segment's replicas and revokes puts placed there") {
  service_fixture f;
  auto s1 = f.mount(1, 1 << 20);
  f.put({"k"}, 100);
  auto pending = f.start({"p"}, 100);
  REQUIRE(pending[0].ok());
  CHECK(f.svc.unmount_segment(s1) == errc::success);
  CHECK(f.svc.unmount_segment(s1) == errc::segment_not_found);
  CHECK(f.query({"k"})[0].status == errc::not_found);
  CHECK(f.end({"p"}, pending)[0] == errc::not_found);
  CHECK(f.used() == 0);
  f.check();
}

TEST_CASE("graceful unregister cleans up like a death, at once") {
  service_fixture f;
  f.mount(7, 1 << 20);
  f.put({"k"}, 100);
  CHECK(f.svc.unregister_node(7) == errc::success);
  CHECK(f.svc.unregister_node(7) == errc::node_unknown);
  CHECK(f.svc.segments().empty());
  CHECK(f.query({"k"})[0].status == errc::not_found);
}

TEST_CASE("ids are seeded so that a restarted service does not reuse them") {
  meta::service_options o;  // id_seed 0: from the wall clock
  meta::service a(o);
  auto seg = a.mount_segment(1, 1 << 20);
  std::vector<std::string> keys{"k"};
  std::vector<std::uint64_t> sizes{10};
  std::vector<put_start_result> out(1);
  REQUIRE(a.put_start(keys, sizes, {}, 0, out) == errc::success);
  CHECK(out[0].version > 1'000'000'000'000'000ull);  // microseconds since 1970, not 1
  CHECK(seg.id > 1'000'000'000'000'000ull);
}

TEST_CASE("batches from several threads proceed concurrently and stay consistent") {
  meta::service_options o = small_options();
  o.shards = 8;
  service_fixture f(o);
  f.mount(1, 64 << 20);
  f.mount(2, 64 << 20);
  constexpr int threads = 4, rounds = 200, batch = 32;
  std::vector<std::thread> pool;
  std::atomic<int> failures{0};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        auto keys = make_keys("t" + std::to_string(t) + "-" + std::to_string(r) + "-", batch);
        std::vector<std::uint64_t> sizes(batch, 4096);
        std::vector<put_start_result> started(batch);
        f.svc.put_start(keys, sizes, put_options{2}, 0, started);
        std::vector<version_t> versions;
        for (auto& s : started) versions.push_back(s.version);
        std::vector<errc> ended(batch);
        f.svc.put_end(keys, versions, ended);
        std::vector<query_result> q(batch);
        f.svc.query(keys, 0s, q);  // no lease: removed objects free their space at once
        for (int i = 0; i < batch; ++i)
          if (!started[i].ok() || ended[i] != errc::success || !q[i].ok() || q[i].version != versions[i]) {
            MESSAGE("key " << keys[i] << ": start " << started[i].ec().message() << ", end "
                           << std::error_code(ended[i]).message() << ", query " << q[i].ec().message());
            ++failures;
          }
        if (r % 2) {
          std::vector<errc> removed(batch);
          f.svc.remove(keys, removed);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(failures == 0);
  CHECK(f.svc.stats().objects == threads * rounds / 2 * batch);
  f.check();
}

TEST_CASE("a node may propose its segment's id: a taken id answers already_exists") {
  service_fixture f;
  auto first = f.svc.mount_segment(1, 1 << 20, {}, 777);
  CHECK(first.status == errc::success);
  CHECK(first.id == 777);
  auto clash = f.svc.mount_segment(2, 1 << 20, {}, 777);
  CHECK(clash.status == errc::already_exists);
  CHECK(f.svc.segments().size() == 1);
  CHECK(f.svc.heartbeat(2) == errc::node_unknown);  // a refused mount registers nothing
  auto assigned = f.svc.mount_segment(2, 1 << 20);
  CHECK(assigned.status == errc::success);
  CHECK(assigned.id != 777);
}

TEST_CASE("an object no set of segments could hold fails with no_space and evicts nothing") {
  service_fixture f;
  f.mount(1, 64 * 100);
  f.mount(2, 64 * 10);
  f.put({"keep"}, 64 * 5);
  // Two copies of 20 units: only one segment is large enough.
  CHECK(f.start({"wide"}, 64 * 20, 2)[0].status == errc::no_space);
  // A size whose rounding would overflow.
  CHECK(f.start({"absurd"}, UINT64_MAX - 10)[0].status == errc::no_space);
  CHECK(f.exist({"keep"})[0] == errc::success);
  CHECK(f.svc.stats().evicted_total == 0);
  f.check();
}

TEST_CASE("a node registered as not expiring survives silence: expiring ones do not") {
  meta::service_options o = small_options();
  o.node_ttl = 3s;
  service_fixture f(o);
  REQUIRE(f.svc.register_node(1, /*expires=*/false) == errc::success);
  f.mount(1, 1 << 20);  // mounting keeps its registration as it is
  f.mount(2, 1 << 20);
  f.clock.advance(10s);
  CHECK(f.svc.maintain().dead_nodes == 1);
  CHECK(f.svc.heartbeat(1) == errc::success);
  CHECK(f.svc.heartbeat(2) == errc::node_unknown);
  CHECK(f.svc.segments().size() == 1);
}

TEST_CASE("a remounted segment is held from allocation until no earlier lease can still be in use") {
  meta::service_options o = small_options();
  o.max_lease_ttl = 20s;
  service_fixture f(o);
  REQUIRE(f.svc.mount_segment(1, 1 << 20, {}, 777).status == errc::success);
  const auto keys = make_keys("leased-", 1);
  f.put(keys, 4096);
  const auto leased = f.query(keys);  // a reader now holds a lease on these bytes
  REQUIRE(leased[0].ok());

  // The node is declared dead (or the service restarts): the object and the
  // segment are forgotten, the lease with them. The node comes back and
  // remounts the same memory.
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  REQUIRE(f.svc.mount_segment(1, 1 << 20, {}, 777, /*remount=*/true).status == errc::success);
  CHECK(f.svc.segments().size() == 1);
  CHECK(f.svc.stats().pool.held == 1);
  const auto fresh = make_keys("fresh-", 1);
  CHECK(f.start(fresh, 4096)[0].status == errc::replicas_unavailable);

  // A segment mounted for the first time is allocatable at once.
  const segment_id other = f.mount(2, 1 << 20);
  const auto placed = f.start(make_keys("elsewhere-", 1), 4096);
  REQUIRE(placed[0].ok());
  CHECK(placed[0].replicas[0].segment == other);

  f.clock.advance(20s - 1ms);
  CHECK(f.svc.maintain().released_segments == 0);
  CHECK(f.svc.stats().pool.held == 1);
  f.clock.advance(1ms);  // the reader's lease cannot have outlived this
  CHECK(f.svc.maintain().released_segments == 1);
  CHECK(f.svc.stats().pool.held == 0);
  const auto later = f.start(make_keys("later-", 2), 4096);
  CHECK(later[0].ok());
  CHECK(later[1].ok());
  CHECK((later[0].replicas[0].segment == 777 || later[1].replicas[0].segment == 777));
  f.check();
}

TEST_CASE("a query asking for a lease beyond max_lease_ttl fails as a whole") {
  meta::service_options o = small_options();
  o.max_lease_ttl = 20s;
  service_fixture f(o);
  f.mount(1, 1 << 20);
  const auto keys = make_keys("k", 1);
  f.put(keys, 64);
  std::vector<query_result> out(1);
  CHECK(f.svc.query(keys, 21s, out) == errc::invalid_argument);
  CHECK(f.svc.query(keys, 20s, out) == errc::success);
  CHECK(out[0].ok());
}
