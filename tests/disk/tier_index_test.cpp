// The disk tier's index without I/O: the index log's replay: last copy per
// key, dropped copies, overwritten extents, and a log that ends at its first
// torn or corrupted record. No io_uring: runs in corokv_tests.

#include <corokv/disk/tier_index.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace corokv;
using namespace corokv::disk;

namespace {

index_entry entry(std::string key, version_t v, std::uint64_t offset, std::uint64_t length) {
  return {std::move(key), v, offset, length, static_cast<std::uint32_t>(v * 2654435761u)};
}

}  // namespace

TEST_SUITE("disk") {

TEST_CASE("tier index: replay keeps the last copy per key, forgets dropped ones and the segment is remembered") {
  std::vector<std::byte> log;
  append_segment_record(log, 0xabc);
  append_added_record(log, entry("a", 10, 0, 100));
  append_added_record(log, entry("b", 11, 4096, 5000));
  append_added_record(log, entry("a", 12, 16384, 100));  // a again, elsewhere: the newer wins
  append_added_record(log, entry("c", 13, 32768, 10));
  append_dropped_record(log, 13);
  append_dropped_record(log, 999);  // unknown: nothing
  const auto r = replay_index(log, 1 << 20);
  CHECK(r.segment == 0xabc);
  CHECK_FALSE(r.torn);
  CHECK(r.records == 7);
  CHECK(r.valid_bytes == log.size());
  REQUIRE(r.entries.size() == 2);
  CHECK(r.entries[0] == entry("b", 11, 4096, 5000));
  CHECK(r.entries[1] == entry("a", 12, 16384, 100));
}

TEST_CASE("tier index: a copy written over another's blocks ends that one") {
  std::vector<std::byte> log;
  append_added_record(log, entry("a", 1, 0, 3 * 4096));
  append_added_record(log, entry("b", 2, 3 * 4096, 100));
  append_added_record(log, entry("c", 3, 4096, 10));  // inside a's blocks
  const auto r = replay_index(log, 1 << 20);
  REQUIRE(r.entries.size() == 2);
  CHECK(r.entries[0].key == "c");
  CHECK(r.entries[1].key == "b");
  CHECK(r.overwritten == 1);
}

TEST_CASE("tier index: the log ends at a torn or corrupted record, or one beyond the file") {
  std::vector<std::byte> log;
  append_added_record(log, entry("a", 1, 0, 100));
  const std::size_t good = log.size();
  append_added_record(log, entry("b", 2, 4096, 100));
  append_added_record(log, entry("c", 3, 8192, 100));

  // Torn: the last record cut short (a crash mid-append).
  auto torn = log;
  torn.resize(torn.size() - 5);
  auto r = replay_index(torn, 1 << 20);
  CHECK(r.torn);
  CHECK(r.entries.size() == 2);

  // A flipped byte in the second record: it and everything after are not read.
  auto flipped = log;
  flipped[good + 20] ^= std::byte{0x40};
  r = replay_index(flipped, 1 << 20);
  CHECK(r.torn);
  CHECK(r.valid_bytes == good);
  REQUIRE(r.entries.size() == 1);
  CHECK(r.entries[0].key == "a");

  // An extent beyond the file (a log of another, larger file).
  r = replay_index(log, 8192);
  CHECK(r.entries.size() == 2);
  CHECK(r.torn);

  // Garbage from the start: nothing.
  std::vector<std::byte> junk(100, std::byte{0x5a});
  r = replay_index(junk, 1 << 20);
  CHECK(r.entries.empty());
  CHECK(r.valid_bytes == 0);
}

}  // TEST_SUITE
