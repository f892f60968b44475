#pragma once
// Turns a batch of keys into per-key admission (invalid_key, duplicate_key or
// success) and an order grouped by chunk, then by shard: a chunk of up to
// chunk_size consecutive keys takes each shard lock once. Chunks keep what a
// large batch touches (its keys and results) cache-resident and bound how
// long one batch holds a shard lock. The scratch vectors are reused per
// thread: building a plan does not allocate once they have grown to the
// largest batch seen.

#include <corokv/detail/hash.hpp>
#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace corokv::detail {

// Spreads a hash over shards independently of the low bits that
// std::unordered_map uses for its buckets.
inline std::size_t shard_of(std::uint64_t hash, std::size_t shards) noexcept {
  std::uint64_t h = static_cast<std::uint64_t>(hash) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::size_t>((h >> 32) % shards);
}

class batch_plan {
 public:
  static constexpr std::size_t chunk_size = 512;

  // The rule for every batch operation: a key must be 1..max_key_length bytes
  // (else invalid_key), and a key repeated within the batch fails at each
  // later occurrence with duplicate_key; its first occurrence proceeds.
  void build(key_span keys, std::size_t shards) {
    admit(keys);
    group_by_shard(shards);
  }

  // Admission alone (a client's batch needs no shard order).
  void admit(key_span keys) {
    const std::size_t n = keys.size();
    hashes_.resize(n);
    admission_.assign(n, errc::success);
    for (std::size_t i = 0; i < n; ++i) {
      admission_[i] = check_key(keys[i]);
      hashes_[i] = admission_[i] == errc::success ? hash_key(keys[i]) : 0;
    }
    mark_duplicates(keys);
  }

  errc admission(std::size_t i) const noexcept { return admission_[i]; }
  std::uint64_t hash(std::size_t i) const noexcept { return hashes_[i]; }
  std::size_t shard_count() const noexcept { return shards_; }
  std::size_t chunk_count() const noexcept { return (hashes_.size() + chunk_size - 1) / chunk_size; }
  // Indices of chunk c's admitted keys that live in shard s, in batch order.
  std::span<const std::uint32_t> group(std::size_t c, std::size_t s) const noexcept {
    const std::size_t b = c * shards_ + s;
    return std::span<const std::uint32_t>(order_).subspan(starts_[b], starts_[b + 1] - starts_[b]);
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

  // Counting sort of the admitted keys by (chunk, shard); rejected keys go
  // nowhere.
  void group_by_shard(std::size_t shards) {
    shards_ = shards;
    const std::size_t n = hashes_.size();
    const std::size_t buckets = chunk_count() * shards;
    starts_.assign(buckets + 1, 0);
    bucket_of_key_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (admission_[i] != errc::success) continue;
      bucket_of_key_[i] = static_cast<std::uint32_t>(i / chunk_size * shards + shard_of(hashes_[i], shards));
      ++starts_[bucket_of_key_[i] + 1];
    }
    for (std::size_t b = 0; b < buckets; ++b) starts_[b + 1] += starts_[b];
    order_.resize(starts_[buckets]);
    fill_.assign(starts_.begin(), starts_.end() - 1);
    for (std::size_t i = 0; i < n; ++i)
      if (admission_[i] == errc::success) order_[fill_[bucket_of_key_[i]]++] = static_cast<std::uint32_t>(i);
  }

  std::vector<std::uint64_t> hashes_;
  std::vector<errc> admission_;
  std::vector<std::uint32_t> table_;
  std::size_t shards_ = 1;
  std::vector<std::uint32_t> bucket_of_key_;
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
