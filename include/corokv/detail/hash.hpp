#pragma once
// The key hash. Keys are hashed once per batch and the 64-bit value is reused
// for duplicate detection, shard choice and the table probe. Multiply-fold
// mixing over 16-byte strides: fast for the 16..128-byte keys serving engines
// use. It is not keyed, so it offers no defence against chosen-key flooding;
// the metadata service trusts its cluster (see docs/reference/
// metadata-service.md, limitations).

#include <cstdint>
#include <cstring>
#include <string_view>

namespace corokv::detail {

__extension__ using uint128 = unsigned __int128;  // GCC and Clang; __extension__ keeps -Wpedantic quiet

inline std::uint64_t fold_multiply(std::uint64_t a, std::uint64_t b) noexcept {
  const uint128 product = static_cast<uint128>(a) * b;
  return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
}

inline std::uint64_t load_u64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline std::uint64_t load_u32(const unsigned char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline std::uint64_t hash_key(std::string_view key) noexcept {
  constexpr std::uint64_t k0 = 0x9E3779B97F4A7C15ull, k1 = 0xC2B2AE3D27D4EB4Full, k2 = 0x165667B19E3779F9ull,
                          k3 = 0xD6E8FEB86659FD93ull;
  const auto* p = reinterpret_cast<const unsigned char*>(key.data());
  std::size_t n = key.size();
  std::uint64_t h = fold_multiply(n ^ k0, k1);
  for (; n > 16; p += 16, n -= 16) h = fold_multiply(load_u64(p) ^ k2 ^ h, load_u64(p + 8) ^ k3);
  // The last 1..16 bytes; short tails read overlapping words.
  std::uint64_t a = 0, b = 0;
  if (n >= 8) {
    a = load_u64(p);
    b = load_u64(p + n - 8);
  } else if (n >= 4) {
    a = load_u32(p);
    b = load_u32(p + n - 4);
  } else if (n > 0) {
    a = (std::uint64_t{p[0]} << 16) | (std::uint64_t{p[n / 2]} << 8) | p[n - 1];
  }
  h = fold_multiply(a ^ k2 ^ h, b ^ k3);
  return fold_multiply(h ^ k0, k1 ^ key.size());
}

}  // namespace corokv::detail
