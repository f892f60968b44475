#pragma once
// The batch rule for keys, one key at a time in batch order: a key must be
// 1..max_key_length bytes (else invalid_key), and a key equal to an earlier
// key of the batch fails with duplicate_key; its first occurrence proceeds.
// Admitting key by key lets a client check each key in the same pass that
// uses it. With `full_hash`, each admitted key's hash (detail::hash_key) is
// kept for reuse (a cache lookup); without, repeats are found with a
// cheaper hash of the key's length and outer bytes, since equal keys only
// need to meet in the table (a collision costs one comparison). The vectors
// keep their capacity across batches.

#include <corokv/detail/hash.hpp>
#include <corokv/types.hpp>

#include <cstdint>
#include <vector>

namespace corokv::detail {

class key_admission {
 public:
  void reset(key_span keys, bool full_hash) {
    keys_ = keys;
    full_hash_ = full_hash;
    const std::size_t n = keys.size();
    hashes_.resize(n);
    capacity_ = 0;
    if (n < 2) return;  // nothing can repeat
    capacity_ = 4;
    while (capacity_ < 2 * n) capacity_ <<= 1;
    table_.assign(capacity_, empty);
  }

  // Keys are admitted in order: 0, 1, 2, ...
  errc admit(std::uint32_t i) {
    const std::string_view key = keys_[i];
    if (const errc e = check_key(key); e != errc::success) return e;
    const std::uint64_t h = hashes_[i] = full_hash_ ? hash_key(key) : quick_hash(key);
    if (capacity_ == 0) return errc::success;
    for (std::size_t slot = h & (capacity_ - 1);; slot = (slot + 1) & (capacity_ - 1)) {
      const std::uint32_t j = table_[slot];
      if (j == empty) {
        table_[slot] = i;
        return errc::success;
      }
      if (hashes_[j] == h && keys_[j] == key) return errc::duplicate_key;
    }
  }

  // The hash (detail::hash_key) of admitted key i; reset with full_hash.
  std::uint64_t hash(std::uint32_t i) const noexcept { return hashes_[i]; }

 private:
  // Length and up to 16 outer bytes, one multiply: keys of a batch mostly
  // differ in their last bytes (a counter, a digest).
  static std::uint64_t quick_hash(std::string_view key) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(key.data());
    const std::size_t n = key.size();
    std::uint64_t a = n, b = 0;
    if (n >= 8) {
      a ^= load_u64(p);
      b = load_u64(p + n - 8);
    } else {
      for (std::size_t k = 0; k < n; ++k) b = (b << 8) | p[k];
    }
    return fold_multiply(a ^ 0x9E3779B97F4A7C15ull, b ^ 0xC2B2AE3D27D4EB4Full);
  }

  static constexpr std::uint32_t empty = UINT32_MAX;
  key_span keys_;
  bool full_hash_ = true;
  std::vector<std::uint64_t> hashes_;
  std::vector<std::uint32_t> table_;
  std::size_t capacity_ = 0;
};

}  // namespace corokv::detail
