#pragma once
// CRC-32C (Castagnoli), the checksum of the disk tier's index entries and
// data: with the SSE4.2 instruction where the CPU has it (checked once, at
// run time), else eight bytes at a time from tables. Both give the same
// value; tests compare them with published check values.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace corokv::disk {

namespace detail {

inline constexpr std::uint32_t crc32c_polynomial = 0x82F63B78u;  // reflected

struct crc32c_tables {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  constexpr crc32c_tables() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? crc32c_polynomial : 0u);
      t[0][i] = c;
    }
    for (std::size_t i = 0; i < 256; ++i)
      for (std::size_t k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
  }
};
inline constexpr crc32c_tables crc32c_table{};

inline std::uint32_t crc32c_portable(std::uint32_t crc, const std::byte* p, std::size_t n) noexcept {
  const auto& t = crc32c_table.t;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    v ^= crc;
    crc = t[7][v & 0xff] ^ t[6][(v >> 8) & 0xff] ^ t[5][(v >> 16) & 0xff] ^ t[4][(v >> 24) & 0xff] ^
          t[3][(v >> 32) & 0xff] ^ t[2][(v >> 40) & 0xff] ^ t[1][(v >> 48) & 0xff] ^ t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ static_cast<std::uint8_t>(*p++)) & 0xff];
  return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_sse42(std::uint32_t crc, const std::byte* p,
                                                                      std::size_t n) noexcept {
  std::uint64_t c = crc;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, static_cast<unsigned char>(*p++));
  return c32;
}
inline bool cpu_has_sse42() noexcept {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace detail

// Continues `crc` (0 to start) over `bytes`.
inline std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc = 0) noexcept {
  crc = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (detail::cpu_has_sse42()) return ~detail::crc32c_sse42(crc, bytes.data(), bytes.size());
#endif
  return ~detail::crc32c_portable(crc, bytes.data(), bytes.size());
}

// The table-driven form alone, for tests that compare the two.
inline std::uint32_t crc32c_without_hardware(std::span<const std::byte> bytes, std::uint32_t crc = 0) noexcept {
  return ~detail::crc32c_portable(~crc, bytes.data(), bytes.size());
}

}  // namespace corokv::disk
