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

#include <mutex>
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
      const std::uint64_t hash = detail::hash_key(key);
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

    void invalidate(std::string_view key) {
      if (entry* e = c_.index_.find(key, detail::hash_key(key))) c_.drop(e);
    }

   private:
    friend class metadata_cache;
    explicit view(metadata_cache& c) : c_(c) {}
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
