// CRC-32C without I/O: the published check value, in hardware and from
// tables, whole or in parts. Runs in corokv_tests.

#include <corokv/disk/crc32c.hpp>

#include <doctest/doctest.h>

#include <random>
#include <span>
#include <string>
#include <vector>

using namespace corokv::disk;

namespace {

std::span<const std::byte> ascii_bytes(const char* s) {
  return {reinterpret_cast<const std::byte*>(s), std::char_traits<char>::length(s)};
}

}  // namespace

TEST_SUITE("disk") {

TEST_CASE("crc32c: the published check value, in hardware and from tables, whole or in parts") {
  CHECK(crc32c(ascii_bytes("123456789")) == 0xE3069283u);
  CHECK(crc32c_without_hardware(ascii_bytes("123456789")) == 0xE3069283u);
  CHECK(crc32c(ascii_bytes("")) == 0u);
  std::mt19937_64 rng(5);
  std::vector<std::byte> data(100003);
  for (auto& b : data) b = static_cast<std::byte>(rng());
  const auto whole = crc32c(data);
  CHECK(crc32c_without_hardware(data) == whole);
  const auto first = crc32c(std::span<const std::byte>(data).first(4097));
  CHECK(crc32c(std::span<const std::byte>(data).subspan(4097), first) == whole);
  data[777] ^= std::byte{1};
  CHECK(crc32c(data) != whole);
}

}  // TEST_SUITE
