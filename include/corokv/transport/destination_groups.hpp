#pragma once
// A batch's requests grouped by where they go (a lane, a peer node, a
// file), and the groups' statuses put back in request order: what the
// router does per lane and the lanes do per peer or per file. Groups come
// in the order of their first request, and a group's requests in batch
// order. Reused batch after batch, it keeps its memory: clear() drops the
// groups, not their vectors.
//
// A lookup walks the groups (after checking the last one found): batches
// go to a few destinations, and neighbours mostly share one.

#include <corokv/error.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace corokv::transport {

// to[index[j]] = from[j], for every j: one group's statuses back in the
// batch's order.
inline void scatter_statuses(std::span<const std::uint32_t> index, std::span<const errc> from, std::span<errc> to) {
  for (std::size_t j = 0; j < index.size(); ++j) to[index[j]] = from[j];
}

template <class Key>
class destination_groups {
 public:
  void clear() noexcept {
    for (std::size_t g = 0; g < size_; ++g) groups_[g].index.clear();
    size_ = 0;
    last_ = 0;
  }

  // Puts request `k` in the group of `key` (a new one if none has it yet);
  // returns that group's number.
  std::size_t add(const Key& key, std::uint32_t k) {
    const std::size_t g = find_or_make(key);
    groups_[g].index.push_back(k);
    return g;
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  const Key& key(std::size_t g) const noexcept { return groups_[g].key; }
  // Group g's requests, as positions in the batch.
  std::span<const std::uint32_t> index(std::size_t g) const noexcept { return groups_[g].index; }
  // Group g's statuses (one per request of the group) into the batch's.
  void scatter(std::size_t g, std::span<const errc> group_status, std::span<errc> status) const {
    scatter_statuses(groups_[g].index, group_status, status);
  }

 private:
  struct group {
    Key key{};
    std::vector<std::uint32_t> index;
  };

  std::size_t find_or_make(const Key& key) {
    if (size_ > 0 && groups_[last_].key == key) return last_;
    for (std::size_t g = 0; g < size_; ++g)
      if (groups_[g].key == key) return last_ = g;
    if (size_ == groups_.size()) groups_.emplace_back();
    groups_[size_].key = key;
    return last_ = size_++;
  }

  std::vector<group> groups_;  // the first size_ are in use; the rest keep their memory
  std::size_t size_ = 0;
  std::size_t last_ = 0;
};

}  // namespace corokv::transport
