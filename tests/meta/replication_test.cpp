// The journal and a follower's copy: a copy kept by applying the leader's
// records agrees with a snapshot taken at the same moment, and a copy
// promoted to a service serves exactly what the leader had committed.

#include "../support/service_fixture.hpp"

#include <corokv/meta/replica_state.hpp>

#include <random>
#include <set>

using namespace corokv;
using namespace corokv::test;

namespace {

// Applies every record to a copy at once, as a follower that is never behind.
struct copying_journal final : meta::journal {
  meta::replica_state copy;
  std::uint64_t records = 0;
  void record(const meta::journal_record& r) override {
    ++records;
    copy.apply(r);
  }
};

meta::replica_state snapshot_of(const meta::service& svc) {
  meta::replica_state s;
  bool cut = false;
  svc.snapshot([&](const meta::journal_record& r) { s.apply(r); }, [&] { cut = true; });
  CHECK(cut);
  return s;
}

// Every key of `keys` reads the same from both states.
void check_same(const meta::replica_state& a, const meta::replica_state& b, const std::set<std::string>& keys) {
  CHECK(a.objects() == b.objects());
  CHECK(a.removed() == b.removed());
  CHECK(a.segments() == b.segments());
  CHECK(a.nodes() == b.nodes());
  for (auto& k : keys) {
    const auto* x = a.lookup(k);
    const auto* y = b.lookup(k);
    REQUIRE((x == nullptr) == (y == nullptr));
    if (!x) continue;
    CHECK(x->version == y->version);
    CHECK(x->committed == y->committed);
    CHECK(x->replicas == y->replicas);
    CHECK(x->size == y->size);
  }
}

}  // namespace

TEST_CASE("replication: a copy fed the journal equals a snapshot, and promotes to the leader's objects") {
  auto o = small_options();
  o.high_watermark = 0.9;
  o.low_watermark = 0.6;
  o.max_lease_ttl = 30s;
  service_fixture f(o);
  copying_journal journal;
  f.svc.set_journal(&journal);
  std::mt19937_64 rng(12345);
  auto pick = [&](std::uint64_t n) { return static_cast<std::uint64_t>(rng() % n); };
  const node_id nodes[] = {1, 2, 3};
  for (node_id n : nodes) {
    f.mount(n, 64 << 10);
    f.mount(n, 32 << 10);
  }
  std::set<std::string> keys;
  std::vector<std::pair<std::string, version_t>> pending;
  for (int step = 0; step < 4000; ++step) {
    const std::string key = "k" + std::to_string(pick(400));
    keys.insert(key);
    const auto op = pick(100);
    if (op < 40) {
      auto s = f.start({key}, 64 + pick(4000), 1 + pick(2), pick(2) ? nodes[pick(3)] : 0);
      if (s[0].ok()) {
        if (pick(4) == 0)
          pending.emplace_back(key, s[0].version);
        else
          f.end({key}, s);
      }
    } else if (op < 50 && !pending.empty()) {
      auto [k, v] = pending.back();
      pending.pop_back();
      std::vector<errc> out(1);
      const std::vector<std::string> ks{k};
      const std::vector<version_t> vs{v};
      if (pick(2))
        f.svc.put_end(ks, vs, out);
      else
        f.svc.put_revoke(ks, vs, out);
    } else if (op < 65) {
      f.query({key});  // a lease: a later remove holds the memory
    } else if (op < 80) {
      std::vector<errc> out(1);
      const std::vector<std::string> ks{key};
      f.svc.remove(ks, out);
    } else if (op < 90) {
      f.clock.advance(std::chrono::milliseconds(500 + pick(4000)));
      f.svc.maintain();
    } else if (op < 93) {
      const node_id n = nodes[pick(3)];
      f.svc.unregister_node(n);
      f.mount(n, 64 << 10);
    } else if (op < 94) {
      f.svc.remove_all();
    } else if (op < 96) {
      auto segs = f.svc.segments();
      if (!segs.empty()) f.svc.unmount_segment(segs[pick(segs.size())].id);
      f.mount(nodes[pick(3)], 16 << 10);
    } else {
      f.svc.heartbeat(nodes[pick(3)]);
    }
    if (step % 500 == 499) {
      INFO("step " << step);
      REQUIRE(f.svc.check_invariants() == "");
      check_same(journal.copy, snapshot_of(f.svc), keys);
    }
  }
  CHECK(journal.copy.unmatched() == 0);
  CHECK(journal.records > 4000);
  REQUIRE(journal.copy.objects() > 10);

  meta::promote_report report;
  auto promoted = journal.copy.promote(o, f.clock.source(), &report);
  CHECK(report.refused == 0);
  CHECK(report.objects == journal.copy.objects());
  CHECK(promoted->check_invariants() == "");
  CHECK(promoted->stats().pool.used == f.svc.stats().pool.used);
  CHECK(promoted->stats().objects == f.svc.stats().objects);
  CHECK(promoted->stats().pending_puts == f.svc.stats().pending_puts);
  // Every key reads the same from the leader and from the new leader.
  const std::vector<std::string> all(keys.begin(), keys.end());
  std::vector<query_result> before(all.size()), after(all.size());
  REQUIRE(f.svc.query(all, before) == errc::success);
  REQUIRE(promoted->query(all, after) == errc::success);
  std::size_t found = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO(all[i]);
    CHECK(after[i].status == before[i].status);
    CHECK(after[i].version == before[i].version);
    CHECK(after[i].replicas == before[i].replicas);
    found += before[i].ok();
  }
  CHECK(found > 10);
}

TEST_CASE("replication: a new leader holds the old leader's memory for max_lease_ttl, then evicts as usual") {
  auto o = small_options();
  o.max_lease_ttl = 20s;
  service_fixture f(o);
  copying_journal journal;
  f.svc.set_journal(&journal);
  f.mount(1, 4096);
  const auto old_versions = f.put({"a", "b", "c"}, 1000);  // 3 of 4 KiB
  // A key removed under a lease: its memory is held on the leader...
  f.query({"c"});
  std::vector<errc> out(1);
  const std::vector<std::string> c{"c"};
  REQUIRE(f.svc.remove(c, out) == errc::success);
  CHECK(journal.copy.removed() == 1);

  auto promoted = journal.copy.promote(o, f.clock.source());
  std::vector<std::uint64_t> sizes{1000};
  std::vector<put_start_result> started(1);
  const std::vector<std::string> d{"d"};
  // ...and on the new leader, which may have granted nothing but cannot
  // know: nothing is evicted or reclaimed for room while the hold lasts.
  REQUIRE(promoted->put_start(d, sizes, put_options{1}, 0, started) == errc::success);
  CHECK(started[0].ok());  // the fourth KiB was free
  const std::vector<std::string> e{"e"};
  REQUIRE(promoted->put_start(e, sizes, put_options{1}, 0, started) == errc::success);
  CHECK(started[0].status == errc::no_space);
  f.clock.advance(21s);
  promoted->maintain();
  REQUIRE(promoted->put_start(e, sizes, put_options{1}, 0, started) == errc::success);
  CHECK(started[0].ok());
  // Versions a new leader hands out are above every version it inherited.
  CHECK(started[0].version > old_versions.back());
  CHECK(promoted->check_invariants() == "");
}

TEST_CASE("replication: a remounted segment's hold survives a failover") {
  auto o = small_options();
  o.max_lease_ttl = 20s;
  service_fixture f(o);
  copying_journal journal;
  f.svc.set_journal(&journal);
  f.mount(1, 4096);
  // Node 2 remounts memory the service did not know: held on the leader...
  REQUIRE(f.svc.mount_segment(2, 4096, {}, 777, /*remount=*/true).status == errc::success);
  CHECK(f.svc.stats().pool.held == 1);
  // ...and on the leader that takes over, from the stream and from a snapshot.
  CHECK(journal.copy.promote(o, f.clock.source())->stats().pool.held == 1);
  CHECK(snapshot_of(f.svc).promote(o, f.clock.source())->stats().pool.held == 1);
  auto promoted = journal.copy.promote(o, f.clock.source());
  std::vector<std::uint64_t> sizes{4000, 4000};
  std::vector<put_start_result> started(2);
  const std::vector<std::string> keys{"a", "b"};
  REQUIRE(promoted->put_start(keys, sizes, put_options{1}, 0, started) == errc::success);
  CHECK(started[0].ok());
  CHECK(started[1].status == errc::no_space);  // not in the held segment
  CHECK(started[0].replicas[0].segment != 777);
}
