// The memory layer without I/O: the offset allocator against a model, the
// buffer pool and its handles, registered regions and their lifetime.

#include <corokv/memory/buffer_pool.hpp>
#include <corokv/memory/offset_allocator.hpp>
#include <corokv/memory/registered_region.hpp>
#include <corokv/memory/segment_registry.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

using namespace corokv;

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

TEST_CASE("buffer pool: handles own disjoint bytes, are move-only, and give them back when released") {
  buffer_pool pool(1 << 20);
  REQUIRE(pool.valid());
  std::vector<std::uint64_t> sizes{4096, 0, 100, 2 << 20};
  std::vector<buffer_handle> handles(sizes.size());
  CHECK(pool.allocate(sizes, handles) == 1);  // 2 MiB does not fit
  CHECK(handles[0]);
  CHECK_FALSE(handles[1]);  // size 0: nothing asked
  CHECK(handles[2]);
  CHECK_FALSE(handles[3]);
  CHECK(handles[0].size() == 4096);
  CHECK(handles[2].size() == 100);
  std::memset(handles[0].data(), 'a', handles[0].size());
  std::memset(handles[2].data(), 'b', handles[2].size());
  CHECK(handles[0].bytes()[4095] == std::byte{'a'});  // not overwritten by the other handle
  const std::uint64_t used = pool.used();
  CHECK(used >= 4096 + 100);

  buffer_handle moved = std::move(handles[0]);
  CHECK_FALSE(handles[0]);
  CHECK(moved.size() == 4096);
  CHECK(pool.used() == used);
  moved.release();
  CHECK_FALSE(moved);
  CHECK(pool.used() == used - 4096);
  { buffer_handle gone = std::move(handles[2]); }
  CHECK(pool.used() == 0);
}

TEST_CASE("buffer pool: a handle keeps the pool's memory after the pool object is gone") {
  buffer_handle survivor;
  {
    buffer_pool pool(64 << 10);
    survivor = pool.allocate(1000);
    REQUIRE(survivor);
    std::memset(survivor.data(), 'z', survivor.size());
  }
  // Under ASan this read would fail if the memory had been unmapped.
  CHECK(survivor.bytes()[999] == std::byte{'z'});
  survivor.release();
}

TEST_CASE("buffer pool: no pool means every allocation fails, and many threads allocate and free at once") {
  buffer_pool none(0);
  CHECK_FALSE(none.valid());
  CHECK_FALSE(none.allocate(10));

  buffer_pool pool(8 << 20);
  std::vector<std::thread> threads;
  std::atomic<int> overlaps{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 2000; ++round) {
        std::vector<std::uint64_t> sizes(8, 4096);
        std::vector<buffer_handle> h(8);
        pool.allocate(sizes, h);
        for (auto& x : h)
          if (x) std::memset(x.data(), t, x.size());
        for (auto& x : h)
          if (x && std::any_of(x.bytes().begin(), x.bytes().end(), [&](std::byte b) { return b != std::byte(t); }))
            ++overlaps;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(overlaps == 0);
  CHECK(pool.used() == 0);
}

namespace {

struct counted_registration : lane_registration {
  explicit counted_registration(int& counter) : live(counter) { ++live; }
  ~counted_registration() override { --live; }
  int& live;
};

}  // namespace

TEST_CASE("registered regions: overlap is refused, lookups find the region, unregistering waits for its users") {
  int live = 0;
  region_registry regions(2);
  auto registrar = [&](std::size_t lane, registered_region&, std::unique_ptr<lane_registration>& out) {
    if (lane == 1) out = std::make_unique<counted_registration>(live);  // lane 0 keeps nothing
    return std::error_code{};
  };
  std::vector<std::byte> memory(1 << 16);
  CHECK_FALSE(regions.add(boost::asio::buffer(memory.data(), 4096), registrar));
  CHECK(live == 1);
  CHECK(regions.add(boost::asio::buffer(memory.data() + 4000, 100), registrar) == errc::invalid_argument);
  CHECK(regions.add(boost::asio::mutable_buffer(), registrar) == errc::invalid_argument);
  CHECK_FALSE(regions.add(boost::asio::buffer(memory.data() + 8192, 4096), registrar));
  CHECK(regions.size() == 2);

  auto found = regions.find(memory.data() + 100, 200);
  REQUIRE(found);
  CHECK(found->data() == memory.data());
  CHECK(found->registration(0) == nullptr);
  CHECK(found->registration(1) != nullptr);
  CHECK_FALSE(regions.find(memory.data() + 4090, 10));  // crosses the region's end
  CHECK_FALSE(regions.find(memory.data() + 5000, 10));  // between the regions

  // Unregistered while "an operation" holds it: gone for new lookups, the
  // lane's registration lives until the holder lets go.
  CHECK_FALSE(regions.remove(boost::asio::buffer(memory.data(), 4096)));
  CHECK_FALSE(regions.find(memory.data() + 100, 200));
  CHECK(live == 2);
  found.reset();
  CHECK(live == 1);
  CHECK(regions.remove(boost::asio::buffer(memory.data(), 4096)) == errc::invalid_argument);
}

TEST_CASE("registered regions: a lane that refuses undoes the registration") {
  int live = 0;
  region_registry regions(2);
  std::vector<std::byte> memory(4096);
  auto refuse_second = [&](std::size_t lane, registered_region&, std::unique_ptr<lane_registration>& out) {
    if (lane == 0) {
      out = std::make_unique<counted_registration>(live);
      return std::error_code{};
    }
    return std::error_code(errc::transfer_failed);
  };
  CHECK(regions.add(boost::asio::buffer(memory), refuse_second) == errc::transfer_failed);
  CHECK(live == 0);
  CHECK(regions.empty());
}

TEST_CASE("segment registry: a resolver finds replicas, remembers the last segment and refuses ranges outside") {
  segment_registry registry;
  std::vector<std::byte> a(4096), b(4096);
  registry.add(1, a.data(), a.size());
  registry.add(2, b.data(), b.size());
  registry.with_segments([&](auto& resolve) {
    CHECK(resolve(replica_descriptor{1, 0, 10, 20}).data() == a.data() + 10);
    CHECK(resolve(replica_descriptor{1, 0, 100, 20}).data() == a.data() + 100);
    CHECK(resolve(replica_descriptor{2, 0, 0, 4096}).data() == b.data());
    CHECK(resolve(replica_descriptor{2, 0, 4000, 97}).empty());
    CHECK(resolve(replica_descriptor{3, 0, 0, 1}).empty());
    CHECK(resolve(replica_descriptor{1, 0, 4095, 1}).data() == a.data() + 4095);
  });
}
