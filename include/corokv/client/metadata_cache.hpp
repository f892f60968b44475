#pragma once
// The store's per-key metadata cache: query results with their client-side
// lease deadline, bounded by LRU. A hit is used only while its deadline is
// in the future; expired entries are dropped when met. Entries live in a slab
// allocated once; a reused entry keeps its key string's capacity, so a warm
// cache does not allocate. Thread-safe: one mutex, taken once per batch via
// locked().
//
// Answers racing invalidations. A query's answer describes the service when
// the query ran; if the store removed or replaced a key after the query was
// sent, that answer is older than the invalidation and must not enter the
// cache, or a later read would trust it. So every query takes a ticket (the
// invalidation count when it was sent), and while any query is out each
// invalidation is recorded as (key hash, count) in a small table; an answer
// is stored only for keys not invalidated since its ticket. If the table
// fills, every answer older than the overflow is refused (a cache miss, never
// a stale hit). The table empties when no query is out.

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

namespace corokv::client {

class metadata_cache {
 public:
  // Taken when a query is sent, given back when its answer was stored (or
  // dropped): see "answers racing invalidations" above.
  struct ticket {
    std::uint64_t epoch = 0;
  };

  // Operations on the cache while its lock is held.
  class view {
   public:
    // The cached result if its lease is still valid at `now`.
    const query_result* find(std::string_view key, time_point now) { return find(key, detail::hash_key(key), now); }
    // The same, for a key whose hash (detail::hash_key) is known.
    const query_result* find(std::string_view key, std::uint64_t hash, time_point now) {
      entry* e = c_.index_.find(key, hash);
      if (!e) return nullptr;
      if (e->value.lease_deadline <= now) {
        c_.drop(e);
        return nullptr;
      }
      c_.lru_.move_to_front(e);
      return &e->value;
    }

    // Stores the successful results of a batch (values[i] for keys[i]),
    // answered to a query that took `sent` when it was sent; keys invalidated
    // since are skipped. A batch of a large cache misses the CPU cache on
    // nearly every key, so the misses are overlapped: the home slot of key
    // i + 2d and the entry of key i + d are prefetched while key i is
    // stored.
    void store_all(key_span keys, std::span<const query_result> values, const ticket& sent) {
      if (c_.slab_.empty() || sent.epoch < c_.refused_before_) return;
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
        if (values[i].ok() && !c_.invalidated_since(hashes[i % ring], sent.epoch))
          store_hashed(keys[i], hashes[i % ring], values[i]);
      }
    }

    // Drops the key, and refuses older answers for it that are still on
    // their way.
    void invalidate(std::string_view key) {
      const std::uint64_t hash = detail::hash_key(key);
      if (entry* e = c_.index_.find(key, hash)) c_.drop(e);
      c_.record_invalidation(hash);
    }

    // Drops every key, and refuses every older answer still on its way.
    void invalidate_all() {
      while (entry* e = c_.lru_.back()) c_.drop(e);
      ++c_.epoch_;
      if (c_.queries_out_ != 0) c_.refused_before_ = c_.epoch_;
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

  ticket begin_query() {
    std::lock_guard lock(mu_);
    ++queries_out_;
    return {epoch_};
  }
  void end_query(const ticket&) {
    std::lock_guard lock(mu_);
    if (--queries_out_ == 0) {
      ++tombstone_generation_;  // empties the table
      tombstones_used_ = 0;
      refused_before_ = 0;
    }
  }
  // A ticket held for a scope.
  class query_scope {
   public:
    explicit query_scope(metadata_cache& cache) : cache_(cache), ticket_(cache.begin_query()) {}
    query_scope(const query_scope&) = delete;
    query_scope& operator=(const query_scope&) = delete;
    ~query_scope() { cache_.end_query(ticket_); }
    const metadata_cache::ticket& ticket() const noexcept { return ticket_; }

   private:
    metadata_cache& cache_;
    metadata_cache::ticket ticket_;
  };
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

  // Invalidations while queries are out: open addressing over key hashes;
  // a slot belongs to the table only if it carries the current generation.
  struct tombstone {
    std::uint64_t hash = 0;
    std::uint64_t epoch = 0;
    std::uint64_t generation = 0;
  };
  static constexpr std::size_t tombstone_slots = 1024;  // power of two
  static constexpr std::size_t tombstone_limit = tombstone_slots / 2;

  void record_invalidation(std::uint64_t hash) {
    ++epoch_;
    if (queries_out_ == 0) return;  // no answer on its way can be older
    if (tombstones_.empty()) tombstones_.resize(tombstone_slots);
    if (tombstones_used_ >= tombstone_limit) {
      refused_before_ = epoch_;  // full: refuse every answer sent before now
      return;
    }
    for (std::size_t i = hash & (tombstone_slots - 1);; i = (i + 1) & (tombstone_slots - 1)) {
      tombstone& t = tombstones_[i];
      if (t.generation != tombstone_generation_) {
        t = {hash, epoch_, tombstone_generation_};
        ++tombstones_used_;
        return;
      }
      if (t.hash == hash) {
        t.epoch = epoch_;
        return;
      }
    }
  }

  bool invalidated_since(std::uint64_t hash, std::uint64_t epoch) const {
    if (tombstones_used_ == 0) return false;
    for (std::size_t i = hash & (tombstone_slots - 1);; i = (i + 1) & (tombstone_slots - 1)) {
      const tombstone& t = tombstones_[i];
      if (t.generation != tombstone_generation_) return false;
      if (t.hash == hash) return t.epoch > epoch;
    }
  }

  mutable std::mutex mu_;
  std::uint64_t epoch_ = 0;         // invalidations so far
  std::size_t queries_out_ = 0;
  std::uint64_t refused_before_ = 0;
  std::vector<tombstone> tombstones_;
  std::uint64_t tombstone_generation_ = 1;
  std::size_t tombstones_used_ = 0;
  std::vector<entry> slab_;  // never resized: entries' addresses are stable
  detail::hash_index<entry, key_of> index_;
  detail::intrusive_list<entry> lru_;
  detail::intrusive_list<entry> free_;
};

}  // namespace corokv::client
