#pragma once
// For tests: whether the service's space accounting is sound.

#include <corokv/meta/disk_ledger.hpp>
#include <corokv/meta/object_entry.hpp>
#include <corokv/meta/segment_pool.hpp>
#include <corokv/meta/shard_set.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace corokv::meta {

// Checks that the allocators are sound, that no two live allocations
// (committed, pending, removed but leased, or reserved for a demotion)
// overlap, that the space they hold equals the pool's used bytes, and that
// every committed object sits in the list of its residence. Empty string
// when all is well, else what is wrong. The caller holds every shard's lock.
inline std::string check_invariants(const segment_pool& pool, const shard_set& shards, const disk_ledger& ledger) {
  if (auto err = pool.check_invariants(); !err.empty()) return err;
  std::map<segment_id, std::vector<std::pair<std::uint64_t, std::uint64_t>>> extents;
  for (auto& shard : shards.all()) {
    std::string err;
    shard->objects.for_each([&](const object_entry& e) {
      if (e.replicas.empty() && err.empty()) err = "object without replicas: " + std::string(e.key());
      for (auto& r : e.replicas) extents[r.segment].emplace_back(r.offset, r.length);
    });
    if (!err.empty()) return err;
    for (auto& z : shard->removed)
      for (auto& r : z.replicas) extents[r.segment].emplace_back(r.offset, r.length);
    if (shard->committed() + shard->pending.size() != shard->objects.size()) return "lists and table disagree";
    shard->objects.for_each([&](const object_entry& e) {
      if (e.committed && e.where != residence_of(pool.tiers(e.replicas)) && err.empty())
        err = "residence wrong for " + std::string(e.key());
    });
    if (!err.empty()) return err;
  }
  ledger.reservations([&](const demotion_reservations& reserved) {
    reserved.for_each([&](version_t, const auto& d) { extents[d.to.segment].emplace_back(d.to.offset, d.to.length); });
  });
  std::uint64_t held = 0;
  std::string err;
  pool.for_each_segment([&](const segment_descriptor& d, const extent_allocator& space) {
    auto it = extents.find(d.id);
    if (it == extents.end()) {
      if (space.used() != 0 && err.empty()) err = "segment holds space no object owns";
      return;
    }
    auto& list = it->second;
    std::sort(list.begin(), list.end());
    std::uint64_t seg_held = 0, end = 0;
    for (auto [offset, length] : list) {
      if (offset < end && err.empty()) err = "live allocations overlap in segment " + std::to_string(d.id);
      end = offset + space.rounded(length);
      if (end > space.capacity() && err.empty()) err = "allocation beyond segment end";
      seg_held += space.rounded(length);
    }
    if (seg_held != space.used() && err.empty()) err = "segment used bytes differ from live allocations";
    held += seg_held;
    extents.erase(it);
  });
  if (!err.empty()) return err;
  if (!extents.empty()) return "replica on a segment that is not mounted";
  if (held != pool.usage().used + pool.usage(storage_tier::disk).used) return "pool usage differs from live allocations";
  return {};
}

}  // namespace corokv::meta
