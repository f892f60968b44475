#pragma once
// Which segments this process can reach by address, and where they are.
// Shared by the stores of one process (and their lanes), so that a store
// can read another in-process store's segments by memcpy.
//
// Readers hold a shared lock for a whole batch of copies; removing a segment
// takes the exclusive lock, so a segment's memory is never unmapped while a
// copy from or into it is running. Asynchronous users (a data server sending
// from a segment) pin() instead: the entry's owner keeps the memory mapped
// until they let go, even if the segment is removed meanwhile.

#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <unordered_map>

namespace corokv::memory {

class segment_registry {
  struct region {
    std::byte* base = nullptr;
    std::uint64_t size = 0;
    std::shared_ptr<const void> owner;
  };

 public:
  // `owner` (optional) keeps the memory mapped while pinned.
  void add(segment_id id, std::byte* base, std::uint64_t size, std::shared_ptr<const void> owner = {}) {
    std::unique_lock lock(mu_);
    segments_[id] = {base, size, std::move(owner)};
  }

  // Returns once no batch is still copying from or into the segment.
  void remove(segment_id id) {
    std::shared_ptr<const void> owner;  // released after the lock
    std::unique_lock lock(mu_);
    auto it = segments_.find(id);
    if (it == segments_.end()) return;
    owner = std::move(it->second.owner);
    segments_.erase(it);
  }

  struct pinned {
    std::shared_ptr<const void> owner;
    std::span<std::byte> bytes;  // empty if not here or out of range
  };
  // The replica's bytes and their owner, for use beyond this call.
  pinned pin(segment_id id, std::uint64_t offset, std::uint64_t length) const {
    std::shared_lock lock(mu_);
    auto it = segments_.find(id);
    if (it == segments_.end()) return {};
    const region& g = it->second;
    if (offset > g.size || length > g.size - offset) return {};
    return {g.owner, {g.base + offset, length}};
  }

  std::size_t size() const {
    std::shared_lock lock(mu_);
    return segments_.size();
  }

  bool contains(segment_id id) const {
    std::shared_lock lock(mu_);
    return segments_.count(id) != 0;
  }

  // Resolves replicas to their bytes while the registry is locked. It
  // remembers the last segment it found: the replicas of a batch mostly lie
  // in one segment, which is then looked up once.
  class resolver {
   public:
    // The replica's bytes, or an empty span if its segment is not here or
    // the range falls outside it.
    std::span<std::byte> operator()(const replica_descriptor& r) {
      if (!last_ || r.segment != last_id_) {
        auto it = registry_.segments_.find(r.segment);
        if (it == registry_.segments_.end()) return {};
        last_id_ = r.segment;
        last_ = &it->second;
      }
      if (r.offset > last_->size || r.length > last_->size - r.offset) return {};
      return {last_->base + r.offset, r.length};
    }

   private:
    friend class segment_registry;
    explicit resolver(const segment_registry& registry) : registry_(registry) {}
    const segment_registry& registry_;
    segment_id last_id_ = 0;
    const region* last_ = nullptr;
  };

  // Runs f(resolve) under the shared lock, with resolve a resolver.
  template <class F>
  decltype(auto) with_segments(F&& f) const {
    std::shared_lock lock(mu_);
    resolver resolve(*this);
    return f(resolve);
  }

 private:
  mutable std::shared_mutex mu_;
  std::unordered_map<segment_id, region> segments_;
};

}  // namespace corokv::memory
