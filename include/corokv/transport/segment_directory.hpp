#pragma once
// Where the segments of other nodes live, as the metadata service lists
// them: the router looks a replica's segment up here and hands what it
// finds to the lanes, which read what they understand (a TCP address, a
// shared-memory name, an RDMA key). Sans-I/O: the router fetches the list;
// this only keeps it.
//
// Thread-safe: lookups take a shared lock for a whole batch.

#include <corokv/types.hpp>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv::transport {

class segment_directory {
 public:
  // Replaces the list; returns the segments that left it.
  std::vector<segment_id> replace(std::vector<segment_descriptor> segments) {
    std::unordered_map<segment_id, segment_descriptor> fresh;
    fresh.reserve(segments.size());
    for (auto& d : segments) fresh.emplace(d.id, std::move(d));
    std::vector<segment_id> gone;
    std::unique_lock lock(mu_);
    for (auto& [id, d] : segments_)
      if (!fresh.count(id)) gone.push_back(id);
    segments_.swap(fresh);
    ++refreshes_;
    lock.unlock();
    return gone;  // `fresh` now holds the old list, freed outside the lock
  }

  // Runs f(find) under the shared lock, where find(id) is the segment's
  // descriptor or null; pointers stay valid until f returns.
  template <class F>
  decltype(auto) with_segments(F&& f) const {
    std::shared_lock lock(mu_);
    auto find = [this](segment_id id) -> const segment_descriptor* {
      auto it = segments_.find(id);
      return it == segments_.end() ? nullptr : &it->second;
    };
    return f(find);
  }

  std::size_t size() const {
    std::shared_lock lock(mu_);
    return segments_.size();
  }
  std::uint64_t refreshes() const {
    std::shared_lock lock(mu_);
    return refreshes_;
  }

 private:
  mutable std::shared_mutex mu_;
  std::unordered_map<segment_id, segment_descriptor> segments_;
  std::uint64_t refreshes_ = 0;
};

}  // namespace corokv::transport
