#pragma once
// The mounted segments and the space inside them. Thread-safe on its own (one
// mutex); the service calls it while holding at most its shard locks, never
// the other way round, so lock order is always shard(s) -> pool.
//
// Two tiers: memory segments take puts (allocate()); a node's disk segments
// take the copies it demotes (allocate_disk()), in whole disk blocks. Usage
// is counted per tier: memory eviction looks at memory alone.

#include <corokv/meta/extent_allocator.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace corokv::meta {

struct pool_usage {
  std::uint64_t capacity = 0;
  std::uint64_t used = 0;
  std::size_t segments = 0;
  std::size_t held = 0;  // mounted, not yet allocated from
};

class segment_pool {
 public:
  // Segment ids start at first_id so that ids from before a restart of the
  // service are not reused for other segments after it.
  explicit segment_pool(std::uint64_t alignment = 64, segment_id first_id = 1)
      : alignment_(alignment), next_id_(first_id == 0 ? 1 : first_id) {}

  // Mounts a segment under `requested` (0: the pool picks one) and returns
  // its id, or 0 if the requested id is taken. A segment mounted with
  // `held_until` set is listed and can be read, but nothing is allocated in
  // it before release_held() is called at or after that time.
  // `on_mounted` sees the new segment under the pool's lock, before any
  // allocation can use it.
  template <class OnMounted = void (*)(const segment_descriptor&)>
  segment_id mount(node_id node, std::uint64_t size, segment_endpoints endpoints, segment_id requested = 0,
                   std::optional<time_point> held_until = std::nullopt, storage_tier tier = storage_tier::memory,
                   OnMounted&& on_mounted = [](const segment_descriptor&) {}) {
    std::lock_guard lock(mu_);
    if (requested != 0 && segments_.count(requested)) return 0;
    segment_id id = requested;
    while (id == 0 || segments_.count(id)) id = next_id_++;
    const std::uint64_t unit = tier == storage_tier::disk ? std::max(alignment_, disk_block_size) : alignment_;
    auto& seg =
        segments_.emplace(id, entry{{id, node, size, std::move(endpoints), tier}, extent_allocator(size, unit)})
            .first->second;
    tally(tier).capacity += seg.space.capacity();
    on_mounted(seg.desc);
    if (held_until)
      held_.push_back({id, *held_until});
    else
      order_of(tier).push_back(id);
    return id;
  }

  // Makes the held segments whose time has come allocatable; how many.
  std::size_t release_held(time_point now) {
    std::lock_guard lock(mu_);
    const auto due = std::stable_partition(held_.begin(), held_.end(), [&](const hold& h) { return h.until > now; });
    for (auto it = due; it != held_.end(); ++it) order_of(segments_.at(it->id).desc.tier).push_back(it->id);
    const auto released = static_cast<std::size_t>(held_.end() - due);
    held_.erase(due, held_.end());
    return released;
  }

  // Forgets a segment and its space. Replicas on it must be dropped by the
  // caller (they are no longer freed into it). Returns false if unknown.
  bool unmount(segment_id id) {
    std::lock_guard lock(mu_);
    auto it = segments_.find(id);
    if (it == segments_.end()) return false;
    tally(it->second.desc.tier).capacity -= it->second.space.capacity();
    tally(it->second.desc.tier).used -= it->second.space.used();
    std::erase(order_of(it->second.desc.tier), id);
    segments_.erase(it);
    std::erase_if(held_, [&](const hold& h) { return h.id == id; });
    return true;
  }

  // Mounted and not yet allocatable (see mount's held_until).
  bool held(segment_id id) const {
    std::lock_guard lock(mu_);
    return std::any_of(held_.begin(), held_.end(), [&](const hold& h) { return h.id == id; });
  }

  bool contains(segment_id id) const {
    std::lock_guard lock(mu_);
    return segments_.count(id) != 0;
  }

  // Reserves `size` bytes on `copies` distinct memory segments, on distinct
  // nodes where the cluster has enough of them. Placement rotates over the
  // allocatable (not held) segments so that consecutive objects spread
  // across them. All-or-nothing.
  errc allocate(std::uint64_t size, std::size_t copies, replica_list& out) {
    out.clear();
    std::lock_guard lock(mu_);
    if (copies == 0 || copies > max_replicas) return errc::invalid_argument;
    if (copies > order_.size()) return errc::replicas_unavailable;
    const std::size_t n = order_.size();
    const std::size_t start = cursor_++ % n;
    // Pass 0 takes segments on nodes not yet used; pass 1 any unused segment.
    for (int pass = 0; pass < 2 && out.size() < copies; ++pass) {
      for (std::size_t k = 0; k < n && out.size() < copies; ++k) {
        entry& seg = segments_.at(order_[(start + k) % n]);
        if (std::any_of(out.begin(), out.end(), [&](const replica_descriptor& r) {
              return r.segment == seg.desc.id || (pass == 0 && r.node == seg.desc.node);
            }))
          continue;
        if (seg.space.largest_free() < seg.space.rounded(size)) continue;
        auto offset = seg.space.allocate(size);
        if (!offset) continue;
        tally(storage_tier::memory).used += seg.space.rounded(size);
        out.push_back({seg.desc.id, seg.desc.node, *offset, size});
      }
    }
    if (out.size() == copies) return errc::success;
    free_locked(out);
    out.clear();
    return errc::no_space;
  }

  // Reserves `size` bytes on one of `node`'s allocatable disk segments.
  // no_space if none has room; replicas_unavailable if it has none.
  errc allocate_disk(node_id node, std::uint64_t size, replica_descriptor& out) {
    std::lock_guard lock(mu_);
    bool any = false;
    for (segment_id id : disk_order_) {
      entry& seg = segments_.at(id);
      if (seg.desc.node != node) continue;
      any = true;
      auto offset = seg.space.allocate(size);
      if (!offset) continue;
      tally(storage_tier::disk).used += seg.space.rounded(size);
      out = {id, node, *offset, size};
      return errc::success;
    }
    return any ? errc::no_space : errc::replicas_unavailable;
  }

  // The tier of a mounted segment; nullopt if unknown.
  std::optional<storage_tier> tier_of(segment_id id) const {
    std::lock_guard lock(mu_);
    auto it = segments_.find(id);
    if (it == segments_.end()) return std::nullopt;
    return it->second.desc.tier;
  }

  // Whether any replica lies on a disk segment, and whether all do.
  struct tiers_of_replicas {
    bool any_disk = false;
    bool all_disk = false;
  };
  tiers_of_replicas tiers(const replica_list& replicas) const {
    std::lock_guard lock(mu_);
    tiers_of_replicas t{false, !replicas.empty()};
    for (const auto& r : replicas) {
      auto it = segments_.find(r.segment);
      const bool disk = it != segments_.end() && it->second.desc.tier == storage_tier::disk;
      t.any_disk |= disk;
      t.all_disk &= disk;
    }
    return t;
  }

  // Marks the replicas' ranges allocated (extent_allocator::claim); all or
  // nothing. False if a segment is unknown or a range is not free.
  bool claim(const replica_list& replicas) {
    std::lock_guard lock(mu_);
    std::size_t done = 0;
    for (const auto& r : replicas) {
      auto it = segments_.find(r.segment);
      if (it == segments_.end() || !it->second.space.claim(r.offset, r.length)) break;
      tally(it->second.desc.tier).used += it->second.space.rounded(r.length);
      ++done;
    }
    if (done == replicas.size()) return true;
    for (std::size_t i = 0; i < done; ++i) {
      entry& seg = segments_.at(replicas[i].segment);
      seg.space.free(replicas[i].offset, replicas[i].length);
      tally(seg.desc.tier).used -= seg.space.rounded(replicas[i].length);
    }
    return false;
  }

  // Returns the space of replicas whose segments are still mounted.
  void free(const replica_list& replicas) {
    std::lock_guard lock(mu_);
    free_locked(replicas);
  }

  // True if `copies` distinct allocatable memory segments could each hold
  // `size` bytes were they empty: only then can eviction make room.
  bool could_ever_fit(std::uint64_t size, std::size_t copies) const {
    std::lock_guard lock(mu_);
    const auto fitting = std::count_if(order_.begin(), order_.end(), [&](segment_id id) {
      const extent_allocator& space = segments_.at(id).space;
      return space.capacity() >= space.rounded(size);
    });
    return static_cast<std::size_t>(fitting) >= copies;
  }

  // One tier's capacity and use; segments and held count every tier.
  pool_usage usage(storage_tier tier = storage_tier::memory) const {
    std::lock_guard lock(mu_);
    const totals& t = tallies_[static_cast<std::size_t>(tier)];
    return {t.capacity, t.used, segments_.size(), held_.size()};
  }

  std::vector<segment_descriptor> descriptors() const {
    std::lock_guard lock(mu_);
    std::vector<segment_descriptor> out;
    out.reserve(segments_.size());
    for (auto& [id, seg] : segments_) out.push_back(seg.desc);
    return out;
  }

  std::optional<segment_descriptor> find(segment_id id) const {
    std::lock_guard lock(mu_);
    auto it = segments_.find(id);
    if (it == segments_.end()) return std::nullopt;
    return it->second.desc;
  }

  // Segments of one node, for unmounting a dead node.
  std::vector<segment_id> segments_of(node_id node) const {
    std::lock_guard lock(mu_);
    std::vector<segment_id> out;
    for (auto& [id, seg] : segments_)
      if (seg.desc.node == node) out.push_back(id);
    return out;
  }

  // Consistency check for tests: every allocator is sound and the pool's
  // totals match the sum over segments. Empty string when all is well.
  std::string check_invariants() const {
    std::lock_guard lock(mu_);
    totals sums[2]{};
    for (auto& [id, seg] : segments_) {
      if (auto err = seg.space.check_invariants(); !err.empty()) return "segment " + std::to_string(id) + ": " + err;
      sums[static_cast<std::size_t>(seg.desc.tier)].capacity += seg.space.capacity();
      sums[static_cast<std::size_t>(seg.desc.tier)].used += seg.space.used();
    }
    for (std::size_t t = 0; t < 2; ++t) {
      if (sums[t].capacity != tallies_[t].capacity) return "pool capacity mismatch";
      if (sums[t].used != tallies_[t].used) return "pool used mismatch";
    }
    if (order_.size() + disk_order_.size() + held_.size() != segments_.size())
      return "a segment is neither allocatable nor held, or both";
    for (segment_id id : disk_order_)
      if (segments_.at(id).desc.tier != storage_tier::disk) return "a memory segment among the disk ones";
    if (failed_frees_ != 0) return std::to_string(failed_frees_) + " frees of space that was not allocated";
    return {};
  }

  // Per-segment allocator state, for tests.
  template <class F>
  void for_each_segment(F&& f) const {
    std::lock_guard lock(mu_);
    for (auto& [id, seg] : segments_) f(seg.desc, seg.space);
  }

 private:
  struct entry {
    segment_descriptor desc;
    extent_allocator space;
  };

  void free_locked(const replica_list& replicas) {
    for (const auto& r : replicas) {
      auto it = segments_.find(r.segment);
      if (it == segments_.end()) continue;  // unmounted: its space went with it
      if (it->second.space.free(r.offset, r.length))
        tally(it->second.desc.tier).used -= it->second.space.rounded(r.length);
      else
        ++failed_frees_;  // a bookkeeping bug; surfaced by check_invariants()
    }
  }

  mutable std::mutex mu_;
  std::uint64_t alignment_;
  std::map<segment_id, entry> segments_;
  struct hold {
    segment_id id;
    time_point until;
  };
  struct totals {
    std::uint64_t capacity = 0;
    std::uint64_t used = 0;
  };
  totals& tally(storage_tier tier) { return tallies_[static_cast<std::size_t>(tier)]; }
  std::vector<segment_id>& order_of(storage_tier tier) {
    return tier == storage_tier::disk ? disk_order_ : order_;
  }

  std::vector<segment_id> order_;  // allocatable memory segments in mount order, for rotating placement
  std::vector<segment_id> disk_order_;  // allocatable disk segments
  std::vector<hold> held_;         // mounted, allocatable from `until`
  std::size_t cursor_ = 0;
  segment_id next_id_;
  std::uint64_t failed_frees_ = 0;
  totals tallies_[2]{};  // by storage_tier
};

}  // namespace corokv::meta
