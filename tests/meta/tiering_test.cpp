// The metadata service's disk tier, on a manual clock: disk segments,
// demotion (demote_start / demote_end), eviction that releases memory but
// keeps objects with a disk copy, disk eviction, and the journal's view of
// it (a follower's copy promotes to the same state).

#include "../support/service_fixture.hpp"

#include <corokv/meta/replica_state.hpp>

#include <algorithm>

using namespace corokv;
using namespace corokv::test;

namespace {

struct tier_fixture : service_fixture {
  explicit tier_fixture(meta::service_options o = tier_options()) : service_fixture(o) {}

  static meta::service_options tier_options() {
    auto o = small_options();
    o.demote_watermark = 0.5;
    return o;
  }
  // Memory above 90% is evicted down to 50%.
  static meta::service_options evicting_options() {
    auto o = tier_options();
    o.high_watermark = 0.9;
    o.low_watermark = 0.5;
    return o;
  }

  segment_id mount_disk(node_id node, std::uint64_t size) {
    auto r = svc.mount_segment(node, size, {}, 0, false, storage_tier::disk);
    REQUIRE(r.status == errc::success);
    return r.id;
  }

  // The node's connection mounts its disk again under its id (a remount).
  void remount_disk(node_id node, std::uint64_t size, segment_id id) {
    REQUIRE(svc.mount_segment(node, size, {}, id, true, storage_tier::disk).id == id);
  }

  std::vector<demotion> demote_start(node_id node, std::size_t max = 100, std::uint64_t bytes = UINT64_MAX) {
    demotion_work out;
    REQUIRE(svc.demote_start(node, max, bytes, saved_through, 0, out) == errc::success);
    released.insert(released.end(), out.released.begin(), out.released.end());
    saved_through = out.released_through;  // as a node does once it wrote them down
    return out.copies;
  }
  std::vector<version_t> released;  // told by demote_start so far
  std::uint64_t saved_through = 0;

  // Reports every demotion with `outcome`; returns the per-key answers.
  std::vector<errc> demote_end(const std::vector<demotion>& work, errc outcome = errc::success) {
    std::vector<std::string> keys;
    std::vector<version_t> versions;
    for (auto& d : work) {
      keys.push_back(d.key);
      versions.push_back(d.version);
    }
    std::vector<errc> copied(work.size(), outcome), out(work.size());
    REQUIRE(svc.demote_end(keys, versions, copied, out) == errc::success);
    return out;
  }

  // What a node's index lists after `work` was committed: its disk copies.
  static std::vector<disk_copy> copies_of(const std::vector<demotion>& work) {
    std::vector<disk_copy> copies;
    for (const auto& d : work) copies.push_back({d.key, d.version, d.to});
    return copies;
  }
  // `node` offers `copies`; the per-copy answers.
  std::vector<errc> adopt(node_id node, std::span<const disk_copy> copies) {
    std::vector<errc> out(copies.size());
    REQUIRE(svc.adopt_disk_copies(node, copies, out) == errc::success);
    return out;
  }

  std::vector<std::string> keys(const std::string& prefix, int n) {
    std::vector<std::string> k;
    for (int i = 0; i < n; ++i) k.push_back(prefix + std::to_string(i));
    return k;
  }
};

}  // namespace

TEST_SUITE("tiering") {

TEST_CASE("disk segments take no puts, and their extents are whole disk blocks") {
  tier_fixture f;
  const segment_id disk = f.mount_disk(1, 1 << 20);
  auto only_disk = f.start({"a"}, 100);
  CHECK(only_disk[0].status == errc::replicas_unavailable);  // no memory segment at all
  const segment_id memory = f.mount(1, 64 << 10);
  f.put({"a"}, 100);
  CHECK(f.query({"a"})[0].replicas[0].segment == memory);
  CHECK(f.svc.segment(disk)->tier == storage_tier::disk);
  CHECK(f.svc.stats().pool.capacity == 64 << 10);  // memory use counts memory alone
  CHECK(f.svc.stats().disk.capacity == 1 << 20);
  auto bad = f.svc.mount_segment(1, 1000, {}, 0, false, storage_tier::disk);
  CHECK(bad.status == errc::invalid_argument);  // less than a block
  f.check();
}

TEST_CASE("demotion is offered above the demote watermark, oldest first, and only to the object's owner") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  f.mount(2, 64 << 10);
  f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 8), 4096);  // 32 KiB of 128: below half
  CHECK(f.demote_start(1).empty());
  f.put(f.keys("m", 12), 4096);  // 80 KiB of 128
  auto work = f.demote_start(1, 3);
  REQUIRE(work.size() == 3);
  for (auto& d : work) {
    CHECK(d.from.node == 1);
    CHECK(d.to.node == 1);
    CHECK(d.to.offset % disk_block_size == 0);
    CHECK(d.to.length == 4096);
  }
  // Oldest first: the k keys were put before the m keys.
  CHECK(work[0].key[0] == 'k');
  // Node 2 has no disk: nothing for it.
  CHECK(f.demote_start(2).empty());
  // Handed out once: the next call offers others.
  auto more = f.demote_start(1, 100);
  for (auto& d : more)
    CHECK(std::none_of(work.begin(), work.end(), [&](const demotion& w) { return w.key == d.key; }));
  CHECK(f.svc.stats().pending_demotions == work.size() + more.size());
  f.check();
}

TEST_CASE("a committed demotion adds the disk copy, and eviction then releases memory and keeps the object") {
  tier_fixture f(tier_fixture::evicting_options());
  const segment_id memory = f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  const auto keys = f.keys("k", 12);
  const auto versions = f.put(keys, 4096);  // 48 KiB of 64
  auto work = f.demote_start(1);
  REQUIRE(work.size() == keys.size());
  auto answers = f.demote_end(work);
  for (auto a : answers) CHECK(a == errc::success);
  auto q = f.query(keys);
  for (auto& r : q) {
    REQUIRE(r.ok());
    REQUIRE(r.replicas.size() == 2);
    CHECK(r.replicas[0].segment == memory);  // memory first: readers try it first
    CHECK(r.replicas[1].segment == disk);
  }
  CHECK(f.svc.stats().demoted_total == keys.size());
  f.check();

  // Leases run out; memory fills: eviction releases memory of the oldest,
  // which stay readable from disk, with the same version.
  f.clock.advance(10s);
  f.put(f.keys("new", 6), 4096);  // 72 KiB wanted of 64: eviction
  const auto after = f.query(keys);
  std::size_t on_disk_only = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    REQUIRE(after[i].ok());
    CHECK(after[i].version == versions[i]);
    if (after[i].replicas.size() == 1) {
      CHECK(after[i].replicas[0].segment == disk);
      ++on_disk_only;
    }
  }
  CHECK(on_disk_only > 0);
  const auto st = f.svc.stats();
  CHECK(st.evicted_total == 0);  // nothing dropped
  CHECK(st.memory_released_total == on_disk_only);
  CHECK(st.disk_only_objects == on_disk_only);
  f.check();
}

namespace {
// validate() of one key read at `version` from `replica`.
errc check_read(tier_fixture& f, const std::string& key, version_t version, const replica_descriptor& replica) {
  std::vector<std::string> keys{key};
  std::vector<version_t> versions{version};
  std::vector<errc> out(1);
  REQUIRE(f.svc.validate(keys, versions, std::span<const replica_descriptor>(&replica, 1), out) == errc::success);
  return out[0];
}
}  // namespace

TEST_CASE("a late read of memory released after a disk copy fails validation although the object lives on") {
  tier_fixture f;
  const segment_id memory = f.mount(1, 4096);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  const version_t v = f.put({"victim"}, 4096)[0];
  REQUIRE(f.demote_end(f.demote_start(1)) == std::vector<errc>{errc::success});
  const auto q = f.query({"victim"})[0];
  REQUIRE(q.replicas.size() == 2);
  const replica_descriptor in_memory = q.replicas[0], on_disk = q.replicas[1];
  CHECK(in_memory.segment == memory);
  CHECK(on_disk.segment == disk);
  CHECK(on_disk.epoch != in_memory.epoch);  // every placement its own number
  // The lease ends; another put needs the memory: the victim's memory is
  // released (it lives on, on disk, same version) and given to the intruder.
  f.clock.advance(6s);
  f.put({"intruder"}, 4096);
  const auto intruder = f.query({"intruder"})[0];
  REQUIRE(intruder.ok());
  CHECK(intruder.replicas[0].segment == memory);
  CHECK(intruder.replicas[0].offset == in_memory.offset);
  CHECK(f.query({"victim"})[0].version == v);
  CHECK(check_read(f, "victim", v, in_memory) == errc::lease_expired);  // those bytes are the intruder's now
  CHECK(check_read(f, "victim", v, on_disk) == errc::success);
  CHECK(f.svc.stats().evicted_total == 0);
  f.check();
}

TEST_CASE("a disk extent dropped and placed again for the same object is a new epoch: the old read fails") {
  tier_fixture f;
  f.mount(1, 4096);
  const segment_id disk = f.mount_disk(1, 64 << 10);
  const version_t v = f.put({"k0"}, 4096)[0];  // memory full: above the demote watermark
  const auto work = f.demote_start(1, 1);
  REQUIRE(work.size() == 1);
  REQUIRE(f.demote_end(work) == std::vector<errc>{errc::success});
  const replica_descriptor first_copy = work[0].to;  // the replica demote_end listed
  REQUIRE(first_copy.segment == disk);
  CHECK(check_read(f, "k0", v, first_copy) == errc::success);
  // The disk goes (its segment unmounted) while the object lives on in
  // memory; the disk mounted again under the same id takes the same
  // object's copy again, at the same offset, after other bytes may have
  // been there.
  REQUIRE(f.svc.unmount_segment(disk) == errc::success);
  CHECK(check_read(f, "k0", v, first_copy) == errc::lease_expired);
  REQUIRE(f.svc.mount_segment(1, 64 << 10, {}, disk, false, storage_tier::disk).id == disk);
  // It was away: its node offers what its index lists (the old copy, which
  // the service refuses: k0 lives on without it) and says so.
  demotion_work asked;
  REQUIRE(f.svc.demote_start(1, 1, UINT64_MAX, 0, 0, asked) == errc::success);
  REQUIRE(asked.offer_copies != 0);
  REQUIRE(f.adopt(1, tier_fixture::copies_of(work)) == std::vector<errc>{errc::already_exists});
  demotion_work resumed;
  REQUIRE(f.svc.demote_start(1, 1, UINT64_MAX, 0, asked.offer_copies, resumed) == errc::success);
  const auto& again = resumed.copies;
  REQUIRE(again.size() == 1);
  REQUIRE(again[0].key == "k0");
  REQUIRE(f.demote_end(again) == std::vector<errc>{errc::success});
  const replica_descriptor second_copy = again[0].to;
  CHECK(second_copy.segment == first_copy.segment);
  CHECK(second_copy.offset == first_copy.offset);
  CHECK(second_copy.epoch != first_copy.epoch);
  CHECK(check_read(f, "k0", v, first_copy) == errc::lease_expired);
  CHECK(check_read(f, "k0", v, second_copy) == errc::success);
  f.check();
}

TEST_CASE("a late read of a disk copy that disk eviction dropped, or that came back by adoption, fails validation") {
  tier_fixture f(tier_fixture::evicting_options());
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 4096);  // one object's room
  f.put(f.keys("k", 12), 4096);
  const auto work = f.demote_start(1, 1);
  REQUIRE(f.demote_end(work) == std::vector<errc>{errc::success});
  f.clock.advance(10s);
  f.put(f.keys("new", 6), 4096);  // memory eviction: k0 lives on disk only
  const auto q = f.query({work[0].key})[0];
  REQUIRE(q.replicas.size() == 1);
  const replica_descriptor copy = q.replicas[0];
  REQUIRE(copy.segment == disk);
  // The lease ends, the next demotion needs the disk: k0 is dropped from
  // disk and its extent given to another object's copy.
  f.clock.advance(10s);
  const auto next = f.demote_start(1, 1);
  REQUIRE(next.size() == 1);
  CHECK(next[0].to.offset == copy.offset);
  CHECK(next[0].to.epoch != copy.epoch);
  CHECK(check_read(f, work[0].key, work[0].version, copy) == errc::not_found);
  REQUIRE(f.demote_end(next) == std::vector<errc>{errc::success});
  CHECK(check_read(f, work[0].key, work[0].version, copy) == errc::not_found);
  f.check();
}

TEST_CASE("an adopted copy is a new placement: a read of the extent made before the adoption does not validate") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096);
  const auto work = f.demote_start(1, 1);
  REQUIRE(f.demote_end(work) == std::vector<errc>{errc::success});
  const replica_descriptor before = f.query({work[0].key})[0].replicas[1];
  // The node leaves; its copy is offered again when it comes back.
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.mount(1, 64 << 10);
  f.remount_disk(1, 1 << 20, disk);
  const auto copies = tier_fixture::copies_of(work);
  REQUIRE(f.adopt(1, copies) == std::vector<errc>{errc::success});
  const auto after = f.query({work[0].key})[0];
  REQUIRE(after.ok());
  REQUIRE(after.replicas.size() == 1);
  CHECK(after.replicas[0].offset == before.offset);
  CHECK(after.replicas[0].epoch != before.epoch);
  CHECK(check_read(f, work[0].key, work[0].version, before) == errc::lease_expired);
  CHECK(check_read(f, work[0].key, work[0].version, after.replicas[0]) == errc::success);
  f.check();
}

TEST_CASE("a demotion whose source memory was released while it copied is refused, though the object lives on") {
  tier_fixture f;
  const segment_id first = f.mount(1, 4096);
  f.mount(1, 4096);
  f.mount_disk(1, 1 << 20);
  f.put({"two"}, 4096, 2);  // both memory segments full: above the demote watermark
  const auto work = f.demote_start(1, 1);
  REQUIRE(work.size() == 1);
  // The segment it copies from is unmounted mid-copy (and may be reused);
  // the object lives on, on the other one.
  REQUIRE(f.svc.unmount_segment(work[0].from.segment) == errc::success);
  CHECK(f.demote_end(work)[0] == errc::not_found);  // the reservation ended with the segment
  const auto q = f.query({"two"})[0];
  REQUIRE(q.ok());
  CHECK(q.replicas.size() == 1);  // no disk copy was added
  CHECK(f.svc.stats().disk.used == 0);
  CHECK((work[0].from.segment == first || q.replicas[0].segment == first));
  f.check();
}

TEST_CASE("eviction releases the memory of objects with a disk copy before it drops any, and drops those being copied last") {
  auto o = tier_fixture::tier_options();
  o.high_watermark = 1.0;
  o.low_watermark = 0.5;
  tier_fixture f(o);
  f.mount(1, 16 * 4096);
  f.mount_disk(1, 1 << 20);
  const auto old_keys = f.keys("old", 12);
  f.put(old_keys, 4096);
  // The four oldest are being copied; the next four have their copy; the
  // four youngest have none.
  const auto copying = f.demote_start(1, 4);
  REQUIRE(copying.size() == 4);
  const auto copied = f.demote_start(1, 4);
  REQUIRE(copied.size() == 4);
  REQUIRE(f.demote_end(copied) == std::vector<errc>(4, errc::success));
  f.clock.advance(10s);  // no leases left
  f.put(f.keys("new", 8), 4096);  // 20 wanted of 16: eviction down to 8 free... at least
  const auto st = f.svc.stats();
  CHECK(st.memory_released_total == 4);  // every copied object's memory went first
  auto alive = [&](const std::vector<demotion>& d) {
    std::size_t n = 0;
    for (const auto& x : d) n += f.query({x.key})[0].ok();
    return n;
  };
  CHECK(alive(copied) == 4);   // nothing lost: they live on disk
  CHECK(alive(copying) == 4);  // their copies are on the way: younger objects went instead
  CHECK(f.demote_end(copying) == std::vector<errc>(4, errc::success));
  CHECK(st.evicted_total > 0);
  CHECK(st.demotions_dropped_total == 0);
  f.check();
}

TEST_CASE("when only objects being copied are left, eviction drops them too: a put does not fail for a slow disk") {
  tier_fixture f;
  f.mount(1, 4 * 4096);
  f.mount_disk(1, 1 << 20);
  f.put(f.keys("old", 4), 4096);
  const auto copying = f.demote_start(1, 4);
  REQUIRE(copying.size() == 4);
  f.clock.advance(10s);
  f.put({"new"}, 4096);  // needs room: one being copied goes
  const auto st = f.svc.stats();
  CHECK(st.evicted_total >= 1);
  CHECK(st.demotions_dropped_total == st.evicted_total);
  const auto answers = f.demote_end(copying);
  CHECK(static_cast<std::uint64_t>(std::count(answers.begin(), answers.end(), errc::not_found)) == st.evicted_total);
  f.check();
}

TEST_CASE("demote_end: a failed copy, a removed object or a stale version frees the disk extent") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096);
  auto work = f.demote_start(1, 3);
  REQUIRE(work.size() == 3);
  CHECK(f.svc.stats().disk.used == 3 * 4096);
  f.remove({work[1].key});
  std::vector<demotion> failed{work[0]}, gone{work[1]}, ok{work[2]};
  CHECK(f.demote_end(failed, errc::transfer_failed)[0] == errc::transfer_failed);
  CHECK(f.demote_end(gone)[0] == errc::not_found);
  CHECK(f.demote_end(ok)[0] == errc::success);
  CHECK(f.demote_end(ok)[0] == errc::not_found);  // reported twice: no such demotion any more
  CHECK(f.svc.stats().disk.used == 4096);          // only the committed copy holds disk
  CHECK(f.query({work[0].key})[0].replicas.size() == 1);
  CHECK(f.query({work[2].key})[0].replicas.size() == 2);
  f.check();
}

TEST_CASE("a reservation never reported is freed after put_timeout") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096);
  auto work = f.demote_start(1, 4);
  REQUIRE(work.size() == 4);
  f.clock.advance(11s);
  CHECK(f.svc.maintain().expired_demotions == 4);
  CHECK(f.svc.stats().disk.used == 0);
  CHECK(f.demote_end(work)[0] == errc::not_found);
  f.check();
}

TEST_CASE("a full disk drops its oldest unleased disk-only objects to take new demotions, and leased ones stay") {
  tier_fixture f(tier_fixture::evicting_options());
  f.mount(1, 64 << 10);
  f.mount_disk(1, 4 * 4096);  // room for four objects
  auto first = f.keys("a", 4);
  f.put(first, 4096);
  f.put(f.keys("fill", 8), 4096);  // 48 KiB of 64: above the demote watermark
  REQUIRE(f.demote_end(f.demote_start(1, 4)) == std::vector<errc>(4, errc::success));
  // Eviction makes the a keys disk-only.
  f.clock.advance(10s);
  f.put(f.keys("b", 6), 4096);
  auto q = f.query(first);  // leases every a key again
  for (auto& r : q) REQUIRE(r.ok());
  // The disk is full of leased objects: nothing can be dropped for new work.
  CHECK(f.demote_start(1).empty());
  CHECK(f.svc.stats().disk_evicted_total == 0);
  // Once the leases end, the oldest disk-only objects make room.
  f.clock.advance(10s);
  auto work = f.demote_start(1, 2);
  CHECK(work.size() == 2);
  CHECK(f.svc.stats().disk_evicted_total == 2);
  std::size_t gone = 0;
  for (auto& r : f.query(first)) gone += r.status == errc::not_found;
  CHECK(gone == 2);
  f.check();
}

TEST_CASE("disk use above its high watermark is evicted down to its low watermark by maintain") {
  auto o = tier_fixture::evicting_options();
  o.disk_high_watermark = 0.7;
  o.disk_low_watermark = 0.25;
  tier_fixture f(o);
  f.mount(1, 64 << 10);
  f.mount_disk(1, 8 * 4096);
  f.put(f.keys("a", 12), 4096);
  REQUIRE(f.demote_end(f.demote_start(1, 8)) == std::vector<errc>(8, errc::success));
  f.clock.advance(10s);
  f.put(f.keys("b", 8), 4096);  // memory eviction: some a keys become disk-only
  const std::size_t disk_only = f.svc.stats().disk_only_objects;
  REQUIRE(disk_only > 0);
  const auto report = f.svc.maintain();
  CHECK(report.disk_evicted > 0);
  CHECK(f.svc.stats().disk.used <= 8 * 4096 / 4 + 4096 * (8 - disk_only));
  f.check();
}

TEST_CASE("a node's death drops its disk copies, and objects with a memory copy elsewhere live on") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id other = f.mount(2, 64 << 10);
  f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096, 2);  // a copy on each node: 96 KiB of 128
  auto work = f.demote_start(1);
  REQUIRE_FALSE(work.empty());
  REQUIRE(f.demote_end(work)[0] == errc::success);
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  for (auto& r : f.query({work[0].key})) {
    REQUIRE(r.ok());
    REQUIRE(r.replicas.size() == 1);
    CHECK(r.replicas[0].segment == other);
  }
  CHECK(f.svc.stats().disk.capacity == 0);
  f.check();
}

TEST_CASE("adopt: a restarted node's copies come back under their versions, on disk only, and taken keys and bad extents are refused") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(2, 1 << 20);
  f.put({"taken"}, 100);
  const std::vector<disk_copy> copies{
      {"a", 777, {disk, 2, 0, 5000}},          // success
      {"b", 778, {disk, 2, 8192, 100}},        // success
      {"taken", 779, {disk, 2, 16384, 100}},   // the key names an object now
      {"c", 780, {disk, 2, 4096, 100}},        // overlaps a's blocks: not free
      {"d", 781, {disk, 1, 32768, 100}},       // claims another node
      {"", 782, {disk, 2, 65536, 100}},        // no key
  };
  const auto out = f.adopt(2, copies);
  CHECK(out == std::vector<errc>{errc::success, errc::success, errc::already_exists, errc::invalid_argument,
                                 errc::invalid_argument, errc::invalid_argument});
  auto q = f.query({"a", "b"});
  CHECK(q[0].version == 777);
  CHECK(q[0].size == 5000);
  REQUIRE(q[0].replicas.size() == 1);
  CHECK(q[0].replicas[0].segment == disk);
  CHECK(f.svc.stats().disk_only_objects == 2);
  // Versions handed out later lie above the adopted ones.
  CHECK(f.put({"later"}, 100)[0] > 778);
  f.check();
}

TEST_CASE("released disk copies are told to their node, and refused if offered again after a restart") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  const auto versions = f.put(f.keys("k", 12), 4096);
  REQUIRE(f.demote_end(f.demote_start(1)) == std::vector<errc>(12, errc::success));
  f.remove({"k0", "k1"});  // unleased: their memory and disk copies are freed now
  f.demote_start(1);  // tells the node what was released
  CHECK(f.released == std::vector<version_t>{versions[0], versions[1]});
  // The node restarts before writing them down: offered again, refused.
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.remount_disk(1, 1 << 20, disk);
  const std::vector<disk_copy> copies{{"k0", versions[0], {disk, 1, 0, 4096}}, {"k2", versions[2], {disk, 1, 8192, 4096}}};
  const auto out = f.adopt(1, copies);
  CHECK(out[0] == errc::not_found);
  CHECK(out[1] == errc::success);
  f.check();
}

TEST_CASE("released copies are told again until the node says it wrote them down") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  f.mount_disk(1, 1 << 20);
  const auto versions = f.put(f.keys("k", 12), 4096);
  REQUIRE(f.demote_end(f.demote_start(1)) == std::vector<errc>(12, errc::success));
  f.remove({"k0"});
  demotion_work first, again, after;
  REQUIRE(f.svc.demote_start(1, 0, 0, f.saved_through, 0, first) == errc::success);
  CHECK(first.released == std::vector<version_t>{versions[0]});
  // The node could not write them down: it echoes what it had before.
  REQUIRE(f.svc.demote_start(1, 0, 0, f.saved_through, 0, again) == errc::success);
  CHECK(again.released == first.released);
  // Now it could.
  REQUIRE(f.svc.demote_start(1, 0, 0, again.released_through, 0, after) == errc::success);
  CHECK(after.released.empty());
}

TEST_CASE("copies on a disk that was away do not come back for objects that lived on without them or keys removed meanwhile") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  f.mount(2, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  // Two copies in memory (one per node) and, for node 1, a disk copy.
  const auto versions = f.put(f.keys("k", 12), 4096, 2);
  const auto work = f.demote_start(1);
  REQUIRE(f.demote_end(work) == std::vector<errc>(work.size(), errc::success));
  // Node 1 goes away; its objects live on node 2.
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.remove({"k0"});                 // an object that lived on elsewhere, removed
  f.remove({"never-here"});         // a key removed while absent
  f.remount_disk(1, 1 << 20, disk);
  auto offer = tier_fixture::copies_of(work);
  offer.push_back({"never-here", 99999, {disk, 1, 900 * 1024, 100}});
  const auto out = f.adopt(1, offer);
  // Every copy of an object that lived on without it is refused: the
  // object is there (already_exists) or was removed meanwhile (k0).
  for (std::size_t i = 0; i < work.size(); ++i)
    CHECK(out[i] == (work[i].key == "k0" ? errc::not_found : errc::already_exists));
  CHECK(out.back() == errc::not_found);  // removed while absent
  CHECK(f.query({"k0"})[0].status == errc::not_found);
  CHECK(f.query({"k1"})[0].ok());  // on node 2
  CHECK(versions.size() == 12);
  f.check();
}

TEST_CASE("remove_all while a disk is away: none of its copies comes back") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096);
  const auto work = f.demote_start(1);
  REQUIRE(f.demote_end(work) == std::vector<errc>(work.size(), errc::success));
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.svc.remove_all();
  f.remount_disk(1, 1 << 20, disk);
  const auto offer = tier_fixture::copies_of(work);
  const auto out = f.adopt(1, offer);
  for (auto e : out) CHECK(e == errc::not_found);
  f.check();
}

TEST_CASE("a disk mounted again while its node lived on: demote_start asks for its copies and reserves nothing until the node says it offered them all, and keys written or removed meanwhile do not come back") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  const auto versions = f.put(f.keys("k", 12), 4096);
  const auto work = f.demote_start(1);
  REQUIRE(work.size() == 12);
  REQUIRE(f.demote_end(work) == std::vector<errc>(work.size(), errc::success));
  // Node 1 is dropped (as when declared dead) while its process lives on.
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  CHECK(f.svc.stats().disks_away == 1);
  f.mount(2, 64 << 10);
  f.put({"k0"}, 100);  // written again, then removed
  f.remove({"k0"});
  f.put({"k1"}, 100);  // written again, and there
  f.remove({"k2"});    // removed (it was gone already)
  // It comes back: its connection remounts memory and disk under their ids.
  f.mount(1, 64 << 10);
  f.remount_disk(1, 1 << 20, disk);
  f.put(f.keys("m", 20), 4096);  // memory above the demote watermark again
  // Past the remount's hold: only the away period keeps demotion off the disk.
  f.clock.advance(f.svc.options().max_lease_ttl + 1s);
  f.svc.maintain();
  demotion_work first;
  REQUIRE(f.svc.demote_start(1, 100, UINT64_MAX, f.saved_through, 0, first) == errc::success);
  REQUIRE(first.offer_copies != 0);
  CHECK(first.copies.empty());
  CHECK(f.svc.stats().disks_away == 1);
  // It offers what its index lists, in two parts; an answer is lost, so it
  // offers everything again: what was taken is answered success again.
  const auto offer = tier_fixture::copies_of(work);
  auto expected = [&](const std::string& key) {
    return key == "k0" || key == "k2" ? errc::not_found : key == "k1" ? errc::already_exists : errc::success;
  };
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (std::size_t from : {std::size_t{0}, std::size_t{6}}) {
      std::span<const disk_copy> part(offer.data() + from, 6);
      const auto out = f.adopt(1, part);
      for (std::size_t i = 0; i < part.size(); ++i) CHECK_MESSAGE(out[i] == expected(work[from + i].key), work[from + i].key);
    }
    // Without the token (its first answer lost), it is asked again.
    demotion_work again;
    REQUIRE(f.svc.demote_start(1, 100, UINT64_MAX, f.saved_through, attempt == 0 ? 0 : first.offer_copies - 1, again) ==
            errc::success);
    CHECK(again.offer_copies == first.offer_copies);
    CHECK(again.copies.empty());
  }
  auto q = f.query({"k0", "k1", "k2", "k3"});
  CHECK(q[0].status == errc::not_found);
  CHECK(q[1].version != versions[1]);  // the newer one
  CHECK(q[2].status == errc::not_found);
  CHECK(q[3].version == versions[3]);
  REQUIRE(q[3].replicas.size() == 1);
  CHECK(q[3].replicas[0].segment == disk);
  // With the token the away period ends, and demotion goes on.
  demotion_work next;
  REQUIRE(f.svc.demote_start(1, 100, UINT64_MAX, f.saved_through, first.offer_copies, next) == errc::success);
  CHECK(next.offer_copies == 0);
  CHECK_FALSE(next.copies.empty());
  CHECK(f.svc.stats().disks_away == 0);
  f.check();
}

TEST_CASE("a disk dropped again after its offer, before its node said so, is asked again under a new token") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096);
  const auto work = f.demote_start(1);
  REQUIRE(f.demote_end(work) == std::vector<errc>(work.size(), errc::success));
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.remount_disk(1, 1 << 20, disk);
  demotion_work first;
  REQUIRE(f.svc.demote_start(1, 0, 0, 0, 0, first) == errc::success);
  REQUIRE(first.offer_copies != 0);
  const auto offer = tier_fixture::copies_of(work);
  auto out = f.adopt(1, offer);
  CHECK(std::count(out.begin(), out.end(), errc::success) == 12);
  // Dropped again (declared dead again) and back before it echoed the token.
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  CHECK(f.svc.stats().disk_only_objects == 0);
  f.remove({"k5"});
  f.remount_disk(1, 1 << 20, disk);
  demotion_work second;
  REQUIRE(f.svc.demote_start(1, 0, 0, 0, first.offer_copies, second) == errc::success);
  CHECK(second.offer_copies != 0);
  CHECK(second.offer_copies != first.offer_copies);
  CHECK(f.svc.stats().disks_away == 1);
  out = f.adopt(1, offer);
  for (std::size_t i = 0; i < work.size(); ++i)
    CHECK(out[i] == (work[i].key == "k5" ? errc::not_found : errc::success));  // removed while away (again)
  demotion_work done;
  REQUIRE(f.svc.demote_start(1, 0, 0, 0, second.offer_copies, done) == errc::success);
  CHECK(done.offer_copies == 0);
  CHECK(f.svc.stats().disks_away == 0);
  f.check();
}

TEST_CASE("a disk that stays away past away_disk_ttl is retired: nothing is remembered for it, and if it comes back none of its copies is taken") {
  auto o = tier_fixture::tier_options();
  o.away_disk_ttl = 10min;
  tier_fixture f(o);
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 4), 4096);
  f.put(f.keys("x", 10), 4096);
  const auto work = f.demote_start(1);
  REQUIRE_FALSE(work.empty());
  REQUIRE(f.demote_end(work) == std::vector<errc>(work.size(), errc::success));
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.clock.advance(5min);
  f.svc.maintain();
  CHECK(f.svc.stats().disks_away == 1);
  f.clock.advance(6min);
  f.svc.maintain();
  CHECK(f.svc.stats().disks_away == 0);  // retired: keys changed from now on are not remembered
  f.remount_disk(1, 1 << 20, disk);
  demotion_work first;
  REQUIRE(f.svc.demote_start(1, 0, 0, 0, 0, first) == errc::success);
  REQUIRE(first.offer_copies != 0);
  const auto offer = tier_fixture::copies_of(work);
  const auto out = f.adopt(1, offer);
  for (auto e : out) CHECK(e == errc::not_found);
  demotion_work done;
  REQUIRE(f.svc.demote_start(1, 0, 0, 0, first.offer_copies, done) == errc::success);
  CHECK(f.svc.stats().disks_away == 0);
  f.check();
}

TEST_CASE("a disk mounted again whose node never finishes its offer is retired too: demotion uses it again, its old copies are refused") {
  auto o = tier_fixture::tier_options();
  o.away_disk_ttl = 10min;
  tier_fixture f(o);
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  f.put(f.keys("k", 12), 4096);
  const auto work = f.demote_start(1);
  REQUIRE_FALSE(work.empty());
  REQUIRE(f.demote_end(work) == std::vector<errc>(work.size(), errc::success));
  REQUIRE(f.svc.unregister_node(1) == errc::success);
  f.mount(1, 64 << 10);
  f.remount_disk(1, 1 << 20, disk);
  f.put(f.keys("m", 12), 4096);
  demotion_work asked;
  REQUIRE(f.svc.demote_start(1, 100, UINT64_MAX, 0, 0, asked) == errc::success);
  REQUIRE(asked.offer_copies != 0);
  f.clock.advance(11min);
  f.svc.maintain();
  CHECK(f.svc.stats().disks_away == 0);
  CHECK_FALSE(f.demote_start(1).empty());  // no longer asked: demotion goes on
  const auto offer = tier_fixture::copies_of(work);
  const auto out = f.adopt(1, offer);
  for (auto e : out) CHECK(e != errc::success);
  f.check();
}

TEST_CASE("a disk segment a master never knew (it restarted) is asked for its copies, even none, before demotion uses it") {
  tier_fixture f;
  f.mount(1, 64 << 10);
  f.remount_disk(1, 1 << 20, 4242);
  f.put(f.keys("k", 12), 4096);
  f.clock.advance(f.svc.options().max_lease_ttl + 1s);
  f.svc.maintain();
  demotion_work first;
  REQUIRE(f.svc.demote_start(1, 100, UINT64_MAX, 0, 0, first) == errc::success);
  REQUIRE(first.offer_copies != 0);
  CHECK(first.copies.empty());
  CHECK(f.adopt(1, {}).empty());
  demotion_work next;
  REQUIRE(f.svc.demote_start(1, 100, UINT64_MAX, 0, first.offer_copies, next) == errc::success);
  CHECK(next.offer_copies == 0);
  CHECK_FALSE(next.copies.empty());  // demotion goes on
  CHECK(f.svc.stats().disks_away == 0);
  // A memory remount is not asked anything.
  f.mount(2, 64 << 10);
  CHECK(f.svc.stats().disks_away == 0);
  f.check();
}

TEST_CASE("a node has one disk segment at most") {
  tier_fixture f;
  const segment_id disk = f.mount_disk(1, 1 << 20);
  CHECK(f.svc.mount_segment(1, 1 << 20, {}, 0, false, storage_tier::disk).status == errc::invalid_argument);
  // Its own again (a reconnecting node) is the same segment; another node may have one.
  CHECK(f.svc.mount_segment(1, 1 << 20, {}, disk, true, storage_tier::disk).id == disk);
  CHECK(f.svc.mount_segment(2, 1 << 20, {}, 0, false, storage_tier::disk).status == errc::success);
  f.check();
}

TEST_CASE("the journal carries the disk tier: a follower's copy promotes to the same objects and replicas") {
  tier_fixture f(tier_fixture::evicting_options());
  struct copying : meta::journal {
    meta::replica_state copy;
    void record(const meta::journal_record& r) override { copy.apply(r); }
  } follower;
  f.svc.set_journal(&follower);
  f.mount(1, 64 << 10);
  const segment_id disk = f.mount_disk(1, 1 << 20);
  const auto keys = f.keys("k", 12);
  f.put(keys, 4096);
  REQUIRE(f.demote_end(f.demote_start(1)) == std::vector<errc>(keys.size(), errc::success));
  f.clock.advance(10s);
  f.put(f.keys("b", 6), 4096);  // some k keys become disk-only
  CHECK(follower.copy.unmatched() == 0);
  auto promoted = follower.copy.promote(tier_fixture::evicting_options(), f.clock.source());
  REQUIRE(promoted->check_invariants().empty());
  CHECK(promoted->segment(disk)->tier == storage_tier::disk);
  std::vector<query_result> a(keys.size()), b(keys.size());
  REQUIRE(f.svc.query(keys, a) == errc::success);
  REQUIRE(promoted->query(keys, b) == errc::success);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    CHECK(a[i].version == b[i].version);
    CHECK(a[i].replicas == b[i].replicas);
  }
  CHECK(promoted->stats().disk_only_objects == f.svc.stats().disk_only_objects);
  CHECK(promoted->stats().disk.used == f.svc.stats().disk.used);
  // It cannot know what the old leader released: a copy made before the
  // failover is refused, one it lists answers success.
  std::vector<disk_copy> copies;
  for (std::size_t i = 0; i < keys.size(); ++i)
    for (const auto& r : a[i].replicas)
      if (r.segment == disk) copies.push_back({keys[i], a[i].version, r});
  REQUIRE_FALSE(copies.empty());
  copies.push_back({"not-listed", a[0].version, {disk, 1, 900 * 1024, 100}});
  std::vector<errc> out(copies.size());
  REQUIRE(promoted->adopt_disk_copies(1, copies, out) == errc::success);
  for (std::size_t i = 0; i + 1 < copies.size(); ++i) CHECK(out[i] == errc::success);
  CHECK(out.back() == errc::not_found);
  f.svc.set_journal(nullptr);
}

}  // TEST_SUITE
