#pragma once
// The objects and the space they hold, and the changes that give space
// back: releasing an object, reclaiming removed ones once their leases end,
// memory and disk eviction, and the repair of every object when segments
// drop. The metadata service (service.hpp) holds this state and builds its
// operations on these steps; each step records itself in the journal and
// tells the disk ledger which disk copies went.
//
// Lock order (the service's): nodes -> shards (ascending) -> the disk
// ledger's reservations -> the rest of the disk ledger -> segment pool.

#include <corokv/meta/clock.hpp>
#include <corokv/meta/disk_ledger.hpp>
#include <corokv/meta/segment_pool.hpp>
#include <corokv/meta/service_options.hpp>
#include <corokv/meta/shard_set.hpp>
#include <corokv/meta/state_records.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace corokv::meta {

class object_space {
 protected:
  object_space(service_options options, clock_source clock)
      : options_(std::move(options)),
        clock_(std::move(clock)),
        pool_(options_.alignment, options_.id_seed),
        ledger_(options_.id_seed),
        shards_(options_.shards) {}

 public:
  time_point now() const { return clock_(); }

 protected:
  // Takes an entry out of the table and returns its space to the pool.
  // Unrecorded only inside drop_segments, whose own record says it all.
  void release(object_shard& shard, object_entry& e, bool recorded = true) {
    if (recorded) recorder_.object(journal_kind::object_released, e);
    note_disk_release(e.replicas, e.version);
    pool_.free(e.replicas);
    shard.erase(e);
  }

  // Takes a committed entry out of the table; if it is leased past `t` its
  // space waits on the shard's removed list until the lease ends.
  void release_after_lease(object_shard& shard, object_entry& e, time_point t) {
    ledger_.key_changed(e.key());
    if (!e.leased(t)) return release(shard, e);
    recorder_.object(journal_kind::object_removed, e);
    note_disk_release(e.replicas, e.version);  // gone for the index now; the extent waits for the lease
    shard.removed.push_back({e.version, e.replicas, e.deadline});
    shard.erase(e);
  }

  std::size_t reclaim_removed(object_shard& shard, time_point t) {
    auto expired = std::partition(shard.removed.begin(), shard.removed.end(),
                                  [&](const removed_object& z) { return z.lease_deadline > t; });
    std::size_t n = static_cast<std::size_t>(shard.removed.end() - expired);
    for (auto it = expired; it != shard.removed.end(); ++it) {
      recorder_.removed_reclaimed(it->version);
      pool_.free(it->replicas);  // its disk copies were told released when it was removed
    }
    shard.removed.erase(expired, shard.removed.end());
    return n;
  }

  // Used bytes to evict down to: the low watermark, and low enough that
  // `needed` more bytes fit in the total.
  std::uint64_t eviction_target(std::uint64_t needed) const {
    const pool_usage u = pool_.usage();
    auto low = static_cast<std::uint64_t>(static_cast<double>(u.capacity) * options_.low_watermark);
    return std::min(low, u.capacity > needed ? u.capacity - needed : 0);
  }

  std::size_t evict_above_high_watermark(time_point t) {
    const pool_usage u = pool_.usage();
    if (static_cast<double>(u.used) <= static_cast<double>(u.capacity) * options_.high_watermark) return 0;
    return evict(t, eviction_target(0));
  }

  // Frees space until the pool's used bytes reach `target`: first removed
  // objects whose lease ended; then the memory of unleased objects with a
  // disk copy (they live on, on disk); then unleased memory-only objects
  // (dropped), those whose disk copy is being made last. Each oldest first
  // (the shards' lists merged). Returns objects dropped.
  std::size_t evict(time_point t, std::uint64_t target) {
    auto locks = shards_.lock_all();
    for (auto& s : shards_.all()) reclaim_removed(*s, t);
    auto unleased = [&](const object_entry& e) { return !e.leased(t); };
    shards_.walk_oldest(&object_shard::copied_lru, unleased, [&](object_shard& shard, object_entry& victim) {
      if (pool_.usage().used <= target) return false;
      release_memory_replicas(shard, victim);
      ++memory_released_total_;
      return true;
    });
    std::size_t evicted = 0;
    if (pool_.usage().used > target) ledger_.reservations([&](demotion_reservations& reserved) {
      auto being_copied = [&](const object_entry& e) { return reserved.contains(e.version); };
      auto drop = [&](object_shard& shard, object_entry& victim) {
        if (pool_.usage().used <= target) return false;
        demotions_dropped_total_ += being_copied(victim);
        release(shard, victim);
        ++evicted;
        return true;
      };
      shards_.walk_oldest(&object_shard::lru, [&](const object_entry& e) { return unleased(e) && !being_copied(e); }, drop);
      if (pool_.usage().used > target) shards_.walk_oldest(&object_shard::lru, unleased, drop);
    });
    evicted_total_ += evicted;
    return evicted;
  }

  // Under every shard lock: drops unleased disk-only objects, oldest first
  // (whose replica is on `node`'s disk, or anyone's for node 0), until disk
  // use is at most `target` or `limit` are gone. Returns how many went.
  // Each shard's disk LRU is ordered by arrival on disk or use since; the
  // shards' oldest are compared by last use, which approximates a global
  // order.
  std::size_t evict_disk(time_point t, node_id node, std::uint64_t target, std::size_t limit = SIZE_MAX) {
    auto eligible = [&](const object_entry& e) {
      return !e.leased(t) && (node == 0 || std::any_of(e.replicas.begin(), e.replicas.end(),
                                                       [&](const replica_descriptor& r) { return r.node == node; }));
    };
    std::size_t dropped = 0;
    shards_.walk_oldest(&object_shard::disk_lru, eligible, [&](object_shard& shard, object_entry& victim) {
      if (dropped >= limit || pool_.usage(storage_tier::disk).used <= target) return false;
      release(shard, victim);
      ++dropped;
      return true;
    });
    disk_evicted_total_ += dropped;
    return dropped;
  }

  // An evicted object with a disk copy keeps it and frees its memory ones.
  void release_memory_replicas(object_shard& shard, object_entry& e) {
    replica_list memory;
    for (const auto& r : e.replicas)
      if (pool_.tier_of(r.segment) != storage_tier::disk) memory.push_back(r);
    e.replicas.erase_if([&](const replica_descriptor& r) {
      return std::find(memory.begin(), memory.end(), r) != memory.end();
    });
    pool_.free(memory);
    shard.set_residence(e, residence::disk);
    recorder_.object(journal_kind::object_replicas_changed, e);
  }

  // A disk copy the service frees, or hides (a removal under lease), is
  // remembered for its node (see disk_ledger::released).
  void note_disk_release(const replica_list& replicas, version_t version) {
    if (!ledger_.any_disk()) return;
    for (const auto& r : replicas)
      if (pool_.tier_of(r.segment) == storage_tier::disk) ledger_.released(r.segment, version);
  }

  static replica_list single(const replica_descriptor& r) {
    replica_list l;
    l.push_back(r);
    return l;
  }

  // Unmounts segments and repairs every object that had a replica on them;
  // also revokes pending puts written by `writer` (0: none).
  void drop_segments(std::span<const segment_id> segs, node_id writer) {
    auto locks = shards_.lock_all();
    // One record: a follower repairs its copy with the same rules.
    recorder_.segments_dropped(segs, writer);
    // Disk segments dropped: their node may come back with their files.
    std::vector<segment_id> disk_dropped;
    for (segment_id s : segs)
      if (pool_.tier_of(s) == storage_tier::disk) disk_dropped.push_back(s);
    ledger_.dropped(disk_dropped, now());
    for (segment_id s : segs) pool_.unmount(s);
    auto on_dropped = [&](const replica_descriptor& r) {
      return std::find(segs.begin(), segs.end(), r.segment) != segs.end();
    };
    for (auto& shard_ptr : shards_.all()) {
      object_shard& shard = *shard_ptr;
      std::vector<object_entry*> affected;
      shard.objects.for_each([&](object_entry& e) {
        if (std::any_of(e.replicas.begin(), e.replicas.end(), on_dropped) ||
            (!e.committed && writer != 0 && e.writer == writer))
          affected.push_back(&e);
      });
      for (object_entry* e : affected) {
        // An object that lives on elsewhere: its dropped disk copy must not
        // come back with its node (the object may be removed meanwhile).
        if (e->committed && !disk_dropped.empty() && !std::all_of(e->replicas.begin(), e->replicas.end(), on_dropped))
          for (const auto& r : e->replicas)
            if (std::find(disk_dropped.begin(), disk_dropped.end(), r.segment) != disk_dropped.end())
              ledger_.released(r.segment, e->version);
        e->replicas.erase_if(on_dropped);
        if (!e->committed)
          release(shard, *e, /*recorded=*/false);  // a pending put is revoked whole
        else if (e->replicas.empty())
          shard.erase(*e);  // nothing left to free
        else
          shard.set_residence(*e, residence_of(pool_.tiers(e->replicas)));
      }
      for (auto& z : shard.removed) z.replicas.erase_if(on_dropped);
      std::erase_if(shard.removed, [](const removed_object& z) { return z.replicas.empty(); });
    }
    // Demotions from or to a dropped segment: the reservation goes (its
    // space with the segment, or freed here).
    ledger_.reservations([&](demotion_reservations& reserved) {
      reserved.remove_if([&](const auto& r) { return on_dropped(r.from) || on_dropped(r.to); },
                         [&](const auto& r) {
                           if (!on_dropped(r.to)) pool_.free(single(r.to));
                         });
    });
  }

  service_options options_;
  clock_source clock_;
  journal_recorder recorder_;
  segment_pool pool_;
  disk_ledger ledger_;  // the disk tier's: reservations, released copies, away disks
  shard_set shards_;
  std::atomic<std::uint64_t> evicted_total_{0};
  std::atomic<std::uint64_t> expired_puts_total_{0};
  std::atomic<std::uint64_t> memory_released_total_{0};
  std::atomic<std::uint64_t> demotions_dropped_total_{0};
  std::atomic<std::uint64_t> disk_evicted_total_{0};
};

}  // namespace corokv::meta
