// The segment registry: a resolver finds replicas, remembers the last
// segment and refuses ranges outside.

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
using namespace corokv::memory;

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
