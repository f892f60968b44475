#pragma once
// Places objects inside one segment. Best fit over free extents, ties broken
// by lowest address, with immediate coalescing of neighbours on free.
//
// Why this policy: best fit with address ordering keeps large free extents
// intact for large KV blocks and has low fragmentation on mixed-size
// workloads; coalescing on free means a segment emptied of objects is again
// one extent, whatever the order of the frees. Sizes are rounded up to the
// alignment (64 bytes by default: cache lines, and what RDMA NICs like), so
// internal waste is below one alignment unit per object. Both operations are
// O(log F) in the number F of free extents.

#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace corokv::meta {

class extent_allocator {
 public:
  explicit extent_allocator(std::uint64_t capacity, std::uint64_t alignment = 64)
      : alignment_(alignment < 1 ? 1 : alignment), capacity_(capacity / alignment_ * alignment_) {
    if (capacity_ > 0) insert_free(0, capacity_);
  }

  std::uint64_t capacity() const noexcept { return capacity_; }
  std::uint64_t used() const noexcept { return used_; }
  std::uint64_t available() const noexcept { return capacity_ - used_; }
  std::uint64_t alignment() const noexcept { return alignment_; }
  std::size_t free_extents() const noexcept { return by_offset_.size(); }
  std::uint64_t largest_free() const noexcept { return by_size_.empty() ? 0 : by_size_.rbegin()->first; }

  // The space an object of `size` bytes really occupies; saturates instead
  // of wrapping, so an absurd size never looks small.
  std::uint64_t rounded(std::uint64_t size) const noexcept {
    if (size > UINT64_MAX - (alignment_ - 1)) return UINT64_MAX;
    return (size + alignment_ - 1) / alignment_ * alignment_;
  }

  // Returns the offset of `size` bytes (rounded) of free space, if any.
  std::optional<std::uint64_t> allocate(std::uint64_t size) {
    const std::uint64_t need = rounded(size);
    if (need == 0 || need > capacity_) return std::nullopt;
    auto fit = by_size_.lower_bound({need, 0});
    if (fit == by_size_.end()) return std::nullopt;
    const auto [length, offset] = *fit;
    by_size_.erase(fit);
    by_offset_.erase(offset);
    if (length > need) insert_free(offset + need, length - need);
    used_ += need;
    return offset;
  }

  // Marks `size` bytes (rounded) at `offset` allocated, as if allocate() had
  // returned them: how a new leader rebuilds the space its objects hold.
  // False, changing nothing, unless the whole range is free.
  bool claim(std::uint64_t offset, std::uint64_t size) {
    const std::uint64_t need = rounded(size);
    if (need == 0 || offset % alignment_ != 0 || offset > capacity_ || need > capacity_ - offset) return false;
    auto it = by_offset_.upper_bound(offset);
    if (it == by_offset_.begin()) return false;
    --it;
    const auto [start, length] = *it;
    if (start + length < offset + need) return false;
    erase_free(it);
    if (offset > start) insert_free(start, offset - start);
    if (start + length > offset + need) insert_free(offset + need, start + length - offset - need);
    used_ += need;
    return true;
  }

  // Returns space obtained from allocate(size). Returns false, changing
  // nothing, if the range is not entirely allocated (a double free).
  bool free(std::uint64_t offset, std::uint64_t size) {
    std::uint64_t length = rounded(size);
    if (length == 0 || offset % alignment_ != 0 || offset > capacity_ || length > capacity_ - offset) return false;
    auto next = by_offset_.lower_bound(offset);
    if (next != by_offset_.end() && next->first < offset + length) return false;
    if (next != by_offset_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second > offset) return false;
    }
    used_ -= length;
    // Coalesce with the neighbours that touch the freed range.
    if (next != by_offset_.end() && next->first == offset + length) {
      length += next->second;
      erase_free(next++);
    }
    if (next != by_offset_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        offset = prev->first;
        length += prev->second;
        erase_free(prev);
      }
    }
    insert_free(offset, length);
    return true;
  }

  // Empty string when the free structures are consistent: extents in range,
  // sorted, non-overlapping, fully coalesced, indexed twice, and summing to
  // capacity - used. Used by tests after every step.
  std::string check_invariants() const {
    if (by_offset_.size() != by_size_.size()) return "index sizes differ";
    std::uint64_t free_sum = 0, end_of_prev = 0;
    bool first = true;
    for (auto [offset, length] : by_offset_) {
      if (length == 0 || offset + length > capacity_) return "extent out of range";
      if (!first && offset < end_of_prev) return "free extents overlap";
      if (!first && offset == end_of_prev) return "adjacent free extents not coalesced";
      if (!by_size_.count({length, offset})) return "extent missing from size index";
      free_sum += length;
      end_of_prev = offset + length;
      first = false;
    }
    if (free_sum != capacity_ - used_) return "free + used != capacity";
    return {};
  }

 private:
  void insert_free(std::uint64_t offset, std::uint64_t length) {
    by_offset_.emplace(offset, length);
    by_size_.emplace(length, offset);
  }
  void erase_free(std::map<std::uint64_t, std::uint64_t>::iterator it) {
    by_size_.erase({it->second, it->first});
    by_offset_.erase(it);
  }

  std::uint64_t alignment_;
  std::uint64_t capacity_;
  std::uint64_t used_ = 0;
  std::map<std::uint64_t, std::uint64_t> by_offset_;         // offset -> length
  std::set<std::pair<std::uint64_t, std::uint64_t>> by_size_; // (length, offset)
};

}  // namespace corokv::meta
