#pragma once
// Test data: bytes from a seed, and memory aligned to the disk tier's block
// (O_DIRECT transfers go straight from and to it).

#include <corokv/disk/disk_file.hpp>

#include <cstddef>
#include <cstdlib>
#include <random>
#include <vector>

namespace corokv::test {

inline std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// Memory aligned to a block, with `skew` bytes added to the start when asked.
struct aligned_memory {
  std::byte* base;
  std::size_t skew;
  explicit aligned_memory(std::size_t n, std::size_t skew_ = 0)
      : base(static_cast<std::byte*>(std::aligned_alloc(disk::block_size, disk::round_up_to_block(n + skew_)))),
        skew(skew_) {}
  aligned_memory(const aligned_memory&) = delete;
  aligned_memory& operator=(const aligned_memory&) = delete;
  ~aligned_memory() { std::free(base); }
  std::byte* data() const { return base + skew; }
};

}  // namespace corokv::test
