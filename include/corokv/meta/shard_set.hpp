#pragma once
// The service's objects, spread over shards by key hash, each shard with
// its own mutex: how a batch visits its keys (one lock per shard touched,
// lookups pipelined), how a whole-table pass locks everything, and the
// oldest-first walk over one of the shards' lists.

#include <corokv/detail/batch_plan.hpp>
#include <corokv/detail/hash.hpp>
#include <corokv/meta/lru_walk.hpp>
#include <corokv/meta/object_shard.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace corokv::meta {

class shard_set {
 public:
  explicit shard_set(std::size_t count) : shards_(std::max<std::size_t>(count, 1)) {
    for (auto& s : shards_) s = std::make_unique<object_shard>();
  }

  std::size_t size() const noexcept { return shards_.size(); }
  std::span<const std::unique_ptr<object_shard>> all() const noexcept { return shards_; }
  object_shard& at(std::size_t i) const { return *shards_[i % shards_.size()]; }

  static hashed_key hashed(std::string_view key) { return {key, detail::hash_key(key)}; }
  object_shard& shard_for(const hashed_key& key) const { return *shards_[detail::shard_of(key.hash, shards_.size())]; }

  // Calls f(shard, index, key) under the shard's lock for every admitted key,
  // one lock per shard touched per chunk of the batch. Lookups run as a
  // pipeline: while key j is handled, the slot of key j + 3d, the entry of
  // key j + 2d and the LRU neighbours of key j + d are on their way into the
  // cache, so a batch pays DRAM latency about once per d keys instead of
  // several times per key.
  template <class F>
  void for_each_group(const detail::batch_plan& plan, key_span keys, F&& f) const {
    constexpr std::size_t d = 4;
    for (std::size_t c = 0; c < plan.chunk_count(); ++c)
      for (std::size_t s = 0; s < plan.shard_count(); ++s) {
        auto group = plan.group(c, s);
        if (group.empty()) continue;
        object_shard& shard = *shards_[s];
        std::lock_guard lock(shard.mu);
        const object_table& table = shard.objects;
        const std::size_t n = group.size();
        auto hash_at = [&](std::size_t j) { return plan.hash(group[j]); };
        for (std::size_t j = 0; j < std::min(n, 3 * d); ++j) table.prefetch_slot(hash_at(j));
        for (std::size_t j = 0; j < std::min(n, 2 * d); ++j) table.prefetch_entry(hash_at(j));
        for (std::size_t j = 0; j < std::min(n, d); ++j) table.prefetch_neighbours(hash_at(j));
        for (std::size_t j = 0; j < n; ++j) {
          if (j + 3 * d < n) table.prefetch_slot(hash_at(j + 3 * d));
          if (j + 2 * d < n) table.prefetch_entry(hash_at(j + 2 * d));
          if (j + d < n) table.prefetch_neighbours(hash_at(j + d));
          const std::uint32_t i = group[j];
          f(shard, i, hashed_key{keys[i], plan.hash(i)});
        }
      }
  }

  // The common shape of operations whose per-key result is an errc: keys
  // the plan refuses (empty, too long) keep its answer, the others get f's.
  template <class F>
  void for_each_key(key_span keys, std::span<errc> out, F&& f) const {
    auto& plan = detail::thread_batch_plan();
    plan.build(keys, shards_.size());
    for (std::size_t i = 0; i < keys.size(); ++i) out[i] = plan.admission(i);
    for_each_group(plan, keys, [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      out[i] = f(shard, i, key);
    });
  }

  // Every shard's lock, in ascending order (the service's lock order).
  std::vector<std::unique_lock<std::mutex>> lock_all() const {
    std::vector<std::unique_lock<std::mutex>> locks;
    locks.reserve(shards_.size());
    for (auto& s : shards_) locks.emplace_back(s->mu);
    return locks;
  }

  // walk_oldest (lru_walk.hpp) over these shards; under every shard lock.
  template <class Eligible, class Visit>
  void walk_oldest(object_list object_shard::*list, Eligible&& eligible, Visit&& visit) const {
    meta::walk_oldest(all(), list, std::forward<Eligible>(eligible), std::forward<Visit>(visit));
  }

 private:
  std::vector<std::unique_ptr<object_shard>> shards_;
};

}  // namespace corokv::meta
