#pragma once
// The store's per-key metadata cache: query results with their client-side
// lease deadline, bounded by LRU. A hit is used only while its deadline is
// in the future; expired entries are dropped when met. Entries live in a slab
// allocated once; a reused entry keeps its key string's capacity, so a warm
// cache does not allocate. Thread-safe: one mutex, taken once per batch via
// locked().

#include <corokv/detail/hash.hpp>
#include <corokv/detail/hash_index.hpp>
#include <corokv/detail/intrusive_list.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <array>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace corokv {

class metadata_cache {
 public:
  // Operations on the cache while its lock is held.
  class view {
   public:
    // The cached result if its lease is still valid at `now`.
    const query_result* find(std::string_view key, time_point now) {
      const std::uint64_t hash = detail::hash_key(key);
      entry* e = c_.index_.find(key, hash);
      if (!e) return nullptr;
      if (e->value.lease_deadline <= now) {
        c_.drop(e);
        return nullptr;
      }
      c_.lru_.move_to_front(e);
      return &e->value;
    }

    void store(std::string_view key, const query_result& value) {
      if (c_.slab_.empty()) return;
      store_hashed(key, detail::hash_key(key), value);
    }

    // Stores the successful results of a batch (values[i] for keys[i]). A
    // batch of a large cache misses the CPU cache on nearly every key, so
    // the misses are overlapped: the home slot of key i + 2d and the entry
    // of key i + d are prefetched while key i is stored.
    void store_all(key_span keys, std::span<const query_result> values) {
      if (c_.slab_.empty()) return;
      constexpr std::size_t d = 4, ring = 16;  // ring > 2d: hashes of keys in flight
      std::array<std::uint64_t, ring> hashes{};
      const std::size_t n = keys.size();
      auto hash_and_prefetch_slot = [&](std::size_t j) {
        hashes[j % ring] = detail::hash_key(keys[j]);
        c_.index_.prefetch_home(hashes[j % ring]);
      };
      auto prefetch_entry = [&](std::size_t j) {
        if (const entry* e = c_.index_.home(hashes[j % ring])) __builtin_prefetch(e);
      };
      for (std::size_t j = 0; j < std::min(n, 2 * d); ++j) hash_and_prefetch_slot(j);
      for (std::size_t j = 0; j < std::min(n, d); ++j) prefetch_entry(j);
      for (std::size_t i = 0; i < n; ++i) {
        if (i + 2 * d < n) hash_and_prefetch_slot(i + 2 * d);
        if (i + d < n) prefetch_entry(i + d);
        if (values[i].ok()) store_hashed(keys[i], hashes[i % ring], values[i]);
      }
    }

    void invalidate(std::string_view key) {
      if (entry* e = c_.index_.find(key, detail::hash_key(key))) c_.drop(e);
    }

   private:
    friend class metadata_cache;
    explicit view(metadata_cache& c) : c_(c) {}

    void store_hashed(std::string_view key, std::uint64_t hash, const query_result& value) {
      entry* e = c_.index_.find(key, hash);
      if (!e) {
        e = c_.take_free_entry();
        e->key.assign(key);
        e->hash = hash;
        c_.index_.insert(e, hash);
        c_.lru_.push_front(e);
      } else {
        c_.lru_.move_to_front(e);
      }
      e->value = value;
    }

    metadata_cache& c_;
  };

  explicit metadata_cache(std::size_t capacity) : slab_(capacity) {
    for (auto& e : slab_) free_.push_front(&e);
  }
  metadata_cache(const metadata_cache&) = delete;
  metadata_cache& operator=(const metadata_cache&) = delete;

  std::size_t capacity() const noexcept { return slab_.size(); }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return index_.size();
  }

  template <class F>
  decltype(auto) locked(F&& f) {
    std::lock_guard lock(mu_);
    view v(*this);
    return f(v);
  }

  void clear() {
    std::lock_guard lock(mu_);
    while (entry* e = lru_.back()) drop(e);
  }

 private:
  struct entry {
    std::string key;
    std::uint64_t hash = 0;
    query_result value;
    entry* prev = nullptr;
    entry* next = nullptr;
  };
  struct key_of {
    std::string_view operator()(const entry& e) const noexcept { return e.key; }
  };

  entry* take_free_entry() {
    if (entry* e = free_.back()) {
      free_.unlink(e);
      return e;
    }
    entry* oldest = lru_.back();  // full: reuse the least recently used
    index_.erase(oldest, oldest->hash);
    lru_.unlink(oldest);
    return oldest;
  }

  void drop(entry* e) {
    index_.erase(e, e->hash);
    lru_.unlink(e);
    free_.push_front(e);
  }

  mutable std::mutex mu_;
  std::vector<entry> slab_;  // never resized: entries' addresses are stable
  detail::hash_index<entry, key_of> index_;
  detail::intrusive_list<entry> lru_;
  detail::intrusive_list<entry> free_;
};

}  // namespace corokv
