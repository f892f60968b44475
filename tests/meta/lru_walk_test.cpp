// meta/lru_walk.hpp: the shards' LRU lists merged oldest first.

#include <corokv/meta/lru_walk.hpp>

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

using namespace corokv;

namespace {

struct shards {
  std::vector<std::unique_ptr<meta::object_shard>> all;
  explicit shards(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) all.push_back(std::make_unique<meta::object_shard>());
  }
  // A committed object in shard s, used at `use`.
  meta::object_entry& add(std::size_t s, const std::string& key, std::uint64_t use) {
    meta::object_shard& shard = *all[s];
    meta::object_entry& e = shard.insert_pending({key, std::hash<std::string>{}(key)});
    shard.commit(e, use);
    return e;
  }
  std::vector<std::string> walk(auto eligible, std::size_t stop_after = 100) {
    std::vector<std::string> seen;
    meta::walk_oldest(all, &meta::object_shard::lru, eligible, [&](meta::object_shard&, meta::object_entry& e) {
      seen.emplace_back(e.key());
      return seen.size() < stop_after;
    });
    return seen;
  }
};

}  // namespace

TEST_SUITE("lru_walk") {

TEST_CASE("the shards' lists are merged by last use, oldest first") {
  shards s(3);
  s.add(0, "a1", 1);
  s.add(1, "b2", 2);
  s.add(0, "a5", 5);
  s.add(2, "c3", 3);
  s.add(1, "b4", 4);
  CHECK(s.walk(meta::every_object) == std::vector<std::string>{"a1", "b2", "c3", "b4", "a5"});
  CHECK(s.walk(meta::every_object, 2) == std::vector<std::string>{"a1", "b2"});  // visit stops it
}

TEST_CASE("objects the filter refuses are stepped over, and a visit may erase what it visits") {
  shards s(2);
  for (std::uint64_t i = 1; i <= 8; ++i) s.add(i % 2, "k" + std::to_string(i), i);
  CHECK(s.walk([](const meta::object_entry& e) { return e.last_use % 3 != 0; }) ==
        std::vector<std::string>{"k1", "k2", "k4", "k5", "k7", "k8"});
  std::vector<std::string> erased;
  meta::walk_oldest(s.all, &meta::object_shard::lru, meta::every_object,
                    [&](meta::object_shard& shard, meta::object_entry& e) {
                      erased.emplace_back(e.key());
                      shard.erase(e);
                      return erased.size() < 5;
                    });
  CHECK(erased == std::vector<std::string>{"k1", "k2", "k3", "k4", "k5"});
  CHECK(s.walk(meta::every_object) == std::vector<std::string>{"k6", "k7", "k8"});
}

TEST_CASE("an empty list, or one shard, is walked as well") {
  shards none(4);
  CHECK(none.walk(meta::every_object).empty());
  shards one(1);
  one.add(0, "x", 7);
  one.add(0, "y", 9);
  CHECK(one.walk(meta::every_object) == std::vector<std::string>{"x", "y"});
}

}  // TEST_SUITE
