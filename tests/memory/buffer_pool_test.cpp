// The buffer pool and its handles: disjoint bytes, move-only handles that
// give them back, the pool's memory kept while a handle lives.

#include <corokv/memory/buffer_pool.hpp>

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
