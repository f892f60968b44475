#pragma once
// Turns a batch of keys into per-key admission (invalid_key, duplicate_key or
// success) and an order grouped by shard, so that a batch takes each shard
// lock once. The scratch vectors are reused per thread: building a plan does
// not allocate once they have grown to the largest batch seen.

#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace corokv::detail {

inline std::size_t hash_key(std::string_view key) noexcept { return std::hash<std::string_view>{}(key); }

// Spreads a hash over shards independently of the low bits that
// std::unordered_map uses for its buckets.
inline std::size_t shard_of(std::size_t hash, std::size_t shards) noexcept {
  std::uint64_t h = static_cast<std::uint64_t>(hash) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::size_t>((h >> 32) % shards);
}

class batch_plan {
 public:
  // The rule for every batch operation: a key must be 1..max_key_length bytes
  // (else invalid_key), and a key repeated within the batch fails at each
  // later occurrence with duplicate_key; its first occurrence proceeds.
  void build(key_span keys, std::size_t shards) {
    const std::size_t n = keys.size();
    hashes_.resize(n);
    admission_.assign(n, errc::success);
    for (std::size_t i = 0; i < n; ++i) {
      admission_[i] = check_key(keys[i]);
      hashes_[i] = admission_[i] == errc::success ? hash_key(keys[i]) : 0;
    }
    mark_duplicates(keys);
    group_by_shard(shards);
  }

  errc admission(std::size_t i) const noexcept { return admission_[i]; }
  std::size_t shard_count() const noexcept { return starts_.size() - 1; }
  // Indices of the batch's keys that live in shard s, in batch order.
  std::span<const std::uint32_t> group(std::size_t s) const noexcept {
    return std::span<const std::uint32_t>(order_).subspan(starts_[s], starts_[s + 1] - starts_[s]);
  }

 private:
  void mark_duplicates(key_span keys) {
    const std::size_t n = keys.size();
    if (n < 2) return;
    std::size_t capacity = 4;
    while (capacity < 2 * n) capacity <<= 1;
    constexpr std::uint32_t empty = UINT32_MAX;
    table_.assign(capacity, empty);
    for (std::size_t i = 0; i < n; ++i) {
      if (admission_[i] != errc::success) continue;
      for (std::size_t slot = hashes_[i] & (capacity - 1);; slot = (slot + 1) & (capacity - 1)) {
        const std::uint32_t j = table_[slot];
        if (j == empty) {
          table_[slot] = static_cast<std::uint32_t>(i);
          break;
        }
        if (hashes_[j] == hashes_[i] && keys[j] == keys[i]) {
          admission_[i] = errc::duplicate_key;
          break;
        }
      }
    }
  }

  // Counting sort of the admitted keys by shard; rejected keys go nowhere.
  void group_by_shard(std::size_t shards) {
    const std::size_t n = hashes_.size();
    starts_.assign(shards + 1, 0);
    shard_of_key_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (admission_[i] != errc::success) continue;
      shard_of_key_[i] = static_cast<std::uint32_t>(shard_of(hashes_[i], shards));
      ++starts_[shard_of_key_[i] + 1];
    }
    for (std::size_t s = 0; s < shards; ++s) starts_[s + 1] += starts_[s];
    order_.resize(starts_[shards]);
    fill_.assign(starts_.begin(), starts_.end() - 1);
    for (std::size_t i = 0; i < n; ++i)
      if (admission_[i] == errc::success) order_[fill_[shard_of_key_[i]]++] = static_cast<std::uint32_t>(i);
  }

  std::vector<std::size_t> hashes_;
  std::vector<errc> admission_;
  std::vector<std::uint32_t> table_;
  std::vector<std::uint32_t> shard_of_key_;
  std::vector<std::uint32_t> starts_{0};
  std::vector<std::uint32_t> fill_;
  std::vector<std::uint32_t> order_;
};

// One plan per thread. A service operation builds it once and never calls
// another operation while using it.
inline batch_plan& thread_batch_plan() {
  thread_local batch_plan plan;
  return plan;
}

}  // namespace corokv::detail
