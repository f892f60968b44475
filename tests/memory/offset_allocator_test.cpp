// The offset allocator without I/O: disjoint, aligned ranges, refusals, and
// random steps against a model of the ranges out.

#include <corokv/memory/offset_allocator.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

using namespace corokv;
using namespace corokv::memory;

TEST_CASE("offset allocator: ranges are disjoint, aligned, and an emptied allocator is one range again") {
  offset_allocator a(1 << 20, 1024, 64);
  CHECK(a.capacity() == 1 << 20);
  auto x = a.allocate(100);
  auto y = a.allocate(64);
  auto z = a.allocate(5000);
  REQUIRE(x);
  REQUIRE(y);
  REQUIRE(z);
  CHECK(x->offset % 64 == 0);
  CHECK(x->size == 128);  // rounded to the granule
  CHECK(a.used() == 128 + 64 + 5056);
  CHECK(a.check_invariants().empty());
  CHECK(a.free(*y));
  CHECK_FALSE(a.free(*y));  // a double free changes nothing
  CHECK(a.free(*x));
  CHECK(a.free(*z));
  CHECK(a.used() == 0);
  CHECK(a.largest_free() == 1 << 20);
  CHECK(a.check_invariants().empty());
  // The whole capacity is one range again.
  auto all = a.allocate(1 << 20);
  REQUIRE(all);
  CHECK(all->offset == 0);
  CHECK_FALSE(a.allocate(64));
}

TEST_CASE("offset allocator: sizes of zero, above the capacity, and beyond max_allocations are refused") {
  offset_allocator a(4096, 2, 64);
  CHECK_FALSE(a.allocate(0));
  CHECK_FALSE(a.allocate(4097));
  auto one = a.allocate(64), two = a.allocate(64);
  CHECK(one);
  CHECK(two);
  CHECK_FALSE(a.allocate(64));  // two out at once at most
  CHECK(a.free(*one));
  CHECK(a.allocate(64));
  CHECK(a.check_invariants().empty());
}

TEST_CASE("offset allocator: a fit is found whenever a free range is large enough for the rounded request") {
  // Free ranges of many sizes; each request must succeed if some free range
  // holds it after the bin rounding (at most 1/8 above the request).
  offset_allocator a(64 << 20, 4096, 64);
  std::vector<offset_allocator::allocation> held;
  for (int i = 0; i < 200; ++i) held.push_back(*a.allocate(64 * (1 + i % 37) * 13));
  for (std::size_t i = 0; i < held.size(); i += 2) CHECK(a.free(held[i]));
  CHECK(a.check_invariants().empty());
  const std::uint64_t largest = a.largest_free();
  CHECK(a.allocate(largest - largest / 8));
  CHECK(a.check_invariants().empty());
}

TEST_CASE("offset allocator: 20,000 random steps against a model of the ranges out") {
  for (unsigned seed : {1u, 2u, 3u}) {
    std::mt19937_64 rng(seed);
    const std::uint64_t capacity = 8 << 20;
    offset_allocator a(capacity, 512, 64);
    std::map<std::uint64_t, offset_allocator::allocation> out;  // by offset
    for (int step = 0; step < 20000; ++step) {
      const bool allocate = out.empty() || (out.size() < 500 && rng() % 100 < 55);
      if (allocate) {
        // Mostly KV-block sizes, sometimes odd ones.
        const std::uint64_t size = rng() % 4 == 0 ? 1 + rng() % 300000 : (std::uint64_t{4096} << (rng() % 6));
        auto got = a.allocate(size);
        if (!got) continue;
        CHECK(got->size >= size);
        CHECK(got->offset + got->size <= capacity);
        // No overlap with any range out.
        auto next = out.lower_bound(got->offset);
        if (next != out.end()) CHECK(got->offset + got->size <= next->first);
        if (next != out.begin()) CHECK(std::prev(next)->first + std::prev(next)->second.size <= got->offset);
        out.emplace(got->offset, *got);
      } else {
        auto it = out.begin();
        std::advance(it, static_cast<long>(rng() % out.size()));
        REQUIRE(a.free(it->second));
        out.erase(it);
      }
      if (step % 500 == 0) REQUIRE(a.check_invariants().empty());
    }
    std::uint64_t used = 0;
    for (auto& [offset, r] : out) used += r.size;
    CHECK(a.used() == used);
    for (auto& [offset, r] : out) REQUIRE(a.free(r));
    CHECK(a.used() == 0);
    CHECK(a.largest_free() == capacity);
    CHECK(a.check_invariants().empty());
  }
}
