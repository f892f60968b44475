#pragma once
// Hands out ranges of one contiguous region by offset; it never touches the
// memory it manages, so the same allocator serves a mapped buffer pool, a
// device-registered region or a file.
//
// Why this design: the store's buffer pool allocates one range per key read
// and frees it when the caller drops the handle, so both operations sit on
// the hot path and must not allocate. This is a two-level segregated-fit
// allocator (in the manner of TLSF): free ranges sit in 240 size bins that
// follow a small floating-point scale (3 mantissa bits: bins are at most
// 12.5% wide), two bitmaps find the smallest non-empty bin that fits in a
// few instructions, and a freed range merges at once with free neighbours,
// so an emptied pool is one range again. Allocation and free are O(1); the
// bookkeeping is a fixed array of nodes made at construction, so neither
// allocates. Sizes are rounded up to `granule` bytes (64: a cache line, and
// what RDMA devices like); a request rounds up to its bin's lower bound when
// searching, so waste is below one bin width of the request, and the rest
// of the chosen range is split off and stays free.
//
// Not thread-safe: the buffer pool wraps it in a mutex.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace corokv::memory {

class offset_allocator {
 public:
  static constexpr std::uint32_t no_node = UINT32_MAX;

  // A range handed out: where it starts and how to give it back.
  struct allocation {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;  // bytes, rounded up to the granule
    std::uint32_t node = no_node;
    bool valid() const noexcept { return node != no_node; }
  };

  // Manages `capacity` bytes (rounded down to the granule, at most 2^32
  // granules); at most `max_allocations` ranges are out at once.
  explicit offset_allocator(std::uint64_t capacity, std::uint32_t max_allocations = 1u << 16,
                            std::uint64_t granule = 64)
      : max_allocations_(max_allocations),
        granule_(granule == 0 ? 1 : granule),
        capacity_(std::min<std::uint64_t>(capacity / granule_, UINT32_MAX)),
        nodes_(2 * static_cast<std::size_t>(max_allocations) + 1) {
    for (auto& head : bin_heads_) head = no_node;
    free_nodes_.reserve(nodes_.size());
    for (std::size_t i = nodes_.size(); i-- > 0;) free_nodes_.push_back(static_cast<std::uint32_t>(i));
    if (capacity_ > 0) {
      const std::uint32_t n = take_node();
      nodes_[n] = node{0, static_cast<std::uint32_t>(capacity_)};
      insert_free(n);
    }
  }

  std::uint64_t capacity() const noexcept { return capacity_ * granule_; }
  std::uint64_t used() const noexcept { return used_ * granule_; }
  std::uint64_t available() const noexcept { return (capacity_ - used_) * granule_; }
  std::uint64_t granule() const noexcept { return granule_; }
  std::size_t allocations() const noexcept { return allocations_; }

  // A range of at least `size` bytes, or nothing if no free range fits (or
  // max_allocations ranges are out).
  std::optional<allocation> allocate(std::uint64_t size) {
    if (size == 0 || size > capacity_ * granule_ || allocations_ >= max_allocations_) return std::nullopt;
    const std::uint64_t need64 = (size + granule_ - 1) / granule_;
    const auto need = static_cast<std::uint32_t>(need64);
    const std::uint32_t bin = find_bin(bin_ceil(need));
    if (bin == no_bin) return std::nullopt;
    const std::uint32_t n = bin_heads_[bin];
    unlink_free(n);
    node& a = nodes_[n];
    if (a.size > need && !free_nodes_.empty()) {
      // The rest of the range stays free, as a neighbour after it.
      const std::uint32_t rest = take_node();
      nodes_[rest] = node{a.offset + need, a.size - need};
      nodes_[rest].prev = n;
      nodes_[rest].next = a.next;
      if (a.next != no_node) nodes_[a.next].prev = rest;
      a.next = rest;
      a.size = need;
      insert_free(rest);
    }
    a.used = true;
    used_ += a.size;
    ++allocations_;
    return allocation{a.offset * granule_, std::uint64_t{a.size} * granule_, n};
  }

  // Gives a range back. False, changing nothing, for a range that is not
  // out (a double free, or a handle from elsewhere).
  bool free(const allocation& a) {
    if (a.node >= nodes_.size()) return false;
    node& f = nodes_[a.node];
    if (!f.used || std::uint64_t{f.offset} * granule_ != a.offset) return false;
    f.used = false;
    used_ -= f.size;
    --allocations_;
    std::uint32_t n = a.node;
    // Merge with free neighbours, so free space never stays in pieces that
    // touch.
    if (const std::uint32_t p = f.prev; p != no_node && !nodes_[p].used) {
      unlink_free(p);
      nodes_[p].size += f.size;
      unlink_neighbour(n);
      give_node(n);
      n = p;
    }
    if (const std::uint32_t x = nodes_[n].next; x != no_node && !nodes_[x].used) {
      unlink_free(x);
      nodes_[n].size += nodes_[x].size;
      unlink_neighbour(x);
      give_node(x);
    }
    insert_free(n);
    return true;
  }

  // The largest range allocate() could hand out now.
  std::uint64_t largest_free() const noexcept {
    if (top_ == 0) return 0;
    const std::uint32_t top_bin = 31 - static_cast<std::uint32_t>(std::countl_zero(top_));
    const std::uint32_t bin = top_bin * 8 + 7 - static_cast<std::uint32_t>(std::countl_zero(leaves_[top_bin]));
    std::uint64_t largest = 0;
    for (std::uint32_t n = bin_heads_[bin]; n != no_node; n = nodes_[n].bin_next)
      largest = std::max<std::uint64_t>(largest, nodes_[n].size);
    return largest * granule_;
  }

  // Empty when the bookkeeping is consistent: the ranges tile the capacity
  // in address order, no two free ranges touch, every free range sits in
  // the bin of its size and the bitmaps say which bins hold any. For tests.
  std::string check_invariants() const {
    std::vector<bool> live(nodes_.size(), true);
    for (std::uint32_t n : free_nodes_) live[n] = false;
    std::uint32_t first = no_node;
    std::size_t live_count = 0;
    for (std::uint32_t n = 0; n < nodes_.size(); ++n) {
      if (!live[n]) continue;
      ++live_count;
      if (nodes_[n].prev == no_node) {
        if (first != no_node) return "two ranges have no predecessor";
        first = n;
      }
    }
    if (capacity_ == 0) return live_count == 0 ? std::string() : "ranges in an empty allocator";
    std::uint64_t at = 0, used = 0;
    std::size_t walked = 0, free_count = 0, out = 0;
    bool previous_free = false;
    for (std::uint32_t n = first, prev = no_node; n != no_node; prev = n, n = nodes_[n].next) {
      const node& x = nodes_[n];
      if (++walked > live_count) return "neighbour links form a cycle";
      if (x.prev != prev) return "neighbour links disagree";
      if (x.offset != at || x.size == 0) return "ranges do not tile the capacity";
      at += x.size;
      if (x.used) {
        used += x.size;
        ++out;
      } else {
        if (previous_free) return "two free ranges touch";
        ++free_count;
        if (!in_bin(n, bin_floor(x.size))) return "a free range is not in its bin";
      }
      previous_free = !x.used;
    }
    if (walked != live_count) return "a live node is not among the ranges";
    if (at != capacity_) return "ranges do not cover the capacity";
    if (used != used_ || out != allocations_) return "used bytes or allocations miscounted";
    std::size_t binned = 0;
    for (std::uint32_t b = 0; b < bin_count; ++b) {
      const bool has = bin_heads_[b] != no_node;
      if (has != ((leaves_[b / 8] >> (b % 8)) & 1u)) return "a leaf bitmap is wrong";
      for (std::uint32_t n = bin_heads_[b]; n != no_node; n = nodes_[n].bin_next) ++binned;
    }
    for (std::uint32_t t = 0; t < 32; ++t)
      if ((leaves_[t] != 0) != ((top_ >> t) & 1u)) return "the top bitmap is wrong";
    if (binned != free_count) return "bins hold other than the free ranges";
    return {};
  }

 private:
  static constexpr std::uint32_t bin_count = 256;
  static constexpr std::uint32_t no_bin = UINT32_MAX;

  struct node {
    std::uint32_t offset = 0;  // granules
    std::uint32_t size = 0;    // granules
    std::uint32_t prev = no_node, next = no_node;          // neighbours by address
    std::uint32_t bin_prev = no_node, bin_next = no_node;  // the free list of its bin
    bool used = false;
  };

  // Sizes in granules map to bins on a scale of 3 mantissa bits: sizes 0..7
  // have a bin each, then every power of two is split into 8 bins.
  static std::uint32_t bin_floor(std::uint32_t size) noexcept {
    if (size < 8) return size;
    const auto high = static_cast<std::uint32_t>(std::bit_width(size)) - 1;
    const std::uint32_t exponent = high - 2;
    const std::uint32_t mantissa = (size >> (high - 3)) & 7u;
    return (exponent << 3) | mantissa;
  }
  static std::uint64_t bin_size(std::uint32_t bin) noexcept {
    const std::uint32_t exponent = bin >> 3, mantissa = bin & 7u;
    if (exponent == 0) return mantissa;
    return std::uint64_t{mantissa | 8u} << (exponent - 1);
  }
  // The smallest bin whose every range holds `size` granules.
  static std::uint32_t bin_ceil(std::uint32_t size) noexcept {
    const std::uint32_t bin = bin_floor(size);
    return bin_size(bin) < size ? bin + 1 : bin;
  }

  // The first non-empty bin at or above `from`.
  std::uint32_t find_bin(std::uint32_t from) const noexcept {
    if (from >= bin_count) return no_bin;
    const std::uint32_t leaf = from / 8;
    const std::uint32_t in_leaf = leaves_[leaf] & (0xFFu << (from % 8)) & 0xFFu;
    if (in_leaf) return leaf * 8 + static_cast<std::uint32_t>(std::countr_zero(in_leaf));
    const std::uint32_t above = leaf + 1 < 32 ? top_ & (~0u << (leaf + 1)) : 0;
    if (!above) return no_bin;
    const auto t = static_cast<std::uint32_t>(std::countr_zero(above));
    return t * 8 + static_cast<std::uint32_t>(std::countr_zero(static_cast<std::uint32_t>(leaves_[t])));
  }

  void insert_free(std::uint32_t n) {
    const std::uint32_t bin = bin_floor(nodes_[n].size);
    nodes_[n].bin_prev = no_node;
    nodes_[n].bin_next = bin_heads_[bin];
    if (bin_heads_[bin] != no_node) nodes_[bin_heads_[bin]].bin_prev = n;
    bin_heads_[bin] = n;
    leaves_[bin / 8] = static_cast<std::uint8_t>(leaves_[bin / 8] | (1u << (bin % 8)));
    top_ |= 1u << (bin / 8);
  }

  void unlink_free(std::uint32_t n) {
    node& x = nodes_[n];
    const std::uint32_t bin = bin_floor(x.size);
    if (x.bin_prev != no_node)
      nodes_[x.bin_prev].bin_next = x.bin_next;
    else
      bin_heads_[bin] = x.bin_next;
    if (x.bin_next != no_node) nodes_[x.bin_next].bin_prev = x.bin_prev;
    x.bin_prev = x.bin_next = no_node;
    if (bin_heads_[bin] == no_node) {
      leaves_[bin / 8] = static_cast<std::uint8_t>(leaves_[bin / 8] & ~(1u << (bin % 8)));
      if (leaves_[bin / 8] == 0) top_ &= ~(1u << (bin / 8));
    }
  }

  // Takes node n out of the address order (its range was merged away).
  void unlink_neighbour(std::uint32_t n) {
    const node& x = nodes_[n];
    if (x.prev != no_node) nodes_[x.prev].next = x.next;
    if (x.next != no_node) nodes_[x.next].prev = x.prev;
  }

  bool in_bin(std::uint32_t n, std::uint32_t bin) const {
    for (std::uint32_t m = bin_heads_[bin]; m != no_node; m = nodes_[m].bin_next)
      if (m == n) return true;
    return false;
  }

  std::uint32_t take_node() {
    const std::uint32_t n = free_nodes_.back();
    free_nodes_.pop_back();
    return n;
  }
  void give_node(std::uint32_t n) {
    nodes_[n] = node{};
    free_nodes_.push_back(n);
  }

  std::size_t max_allocations_;
  std::uint64_t granule_;
  std::uint64_t capacity_;  // granules
  std::uint64_t used_ = 0;  // granules
  std::size_t allocations_ = 0;
  std::vector<node> nodes_;
  std::vector<std::uint32_t> free_nodes_;
  std::uint32_t bin_heads_[bin_count];
  std::uint8_t leaves_[32] = {};
  std::uint32_t top_ = 0;
};

}  // namespace corokv::memory
