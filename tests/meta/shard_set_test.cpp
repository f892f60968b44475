// meta/shard_set.hpp: how a batch visits its keys, shard by shard.

#include <corokv/meta/shard_set.hpp>

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace corokv;

TEST_SUITE("shard_set") {

TEST_CASE("every admitted key is visited once, in its own shard and under its lock, refused keys keep the plan's answer") {
  meta::shard_set shards(8);
  std::vector<std::string> storage;
  for (int i = 0; i < 3000; ++i) storage.push_back("key-" + std::to_string(i));  // more than one chunk
  storage.push_back("");                                      // invalid_key
  storage.push_back(std::string(max_key_length + 1, 'x'));   // invalid_key
  storage.push_back("key-7");                                 // duplicate_key
  std::vector<std::string_view> keys(storage.begin(), storage.end());
  std::vector<errc> out(keys.size(), errc::internal_error);
  std::map<std::uint32_t, int> visits;
  bool every_lock_held = true, every_shard_right = true;
  std::set<meta::object_shard*> checked;
  shards.for_each_key(keys, out, [&](meta::object_shard& shard, std::uint32_t i, const meta::hashed_key& key) {
    ++visits[i];
    if (checked.insert(&shard).second)  // another thread cannot take the shard's lock: the walk holds it
      std::thread([&] {
        if (shard.mu.try_lock()) {
          every_lock_held = false;
          shard.mu.unlock();
        }
      }).join();
    every_shard_right &= &shard == &shards.shard_for(meta::shard_set::hashed(keys[i])) && key.bytes == keys[i];
    return errc::success;
  });
  CHECK(every_lock_held);
  CHECK(checked.size() == 8);
  CHECK(every_shard_right);
  CHECK(visits.size() == 3000);
  bool each_once = true;
  for (auto& [i, n] : visits) each_once &= n == 1 && i < 3000;
  CHECK(each_once);
  for (std::size_t i = 0; i < 3000; ++i) REQUIRE(out[i] == errc::success);
  CHECK(out[3000] == errc::invalid_key);
  CHECK(out[3001] == errc::invalid_key);
  CHECK(out[3002] == errc::duplicate_key);
}

TEST_CASE("the keys spread over the shards, and lock_all holds every shard until released") {
  meta::shard_set shards(4);
  std::set<meta::object_shard*> used;
  for (int i = 0; i < 200; ++i) used.insert(&shards.shard_for(meta::shard_set::hashed("k" + std::to_string(i))));
  CHECK(used.size() == 4);
  CHECK(&shards.at(5) == &shards.at(1));
  auto try_each = [&] {
    int free = 0;
    std::thread([&] {
      for (auto& s : shards.all())
        if (s->mu.try_lock()) {
          ++free;
          s->mu.unlock();
        }
    }).join();
    return free;
  };
  {
    auto locks = shards.lock_all();
    CHECK(locks.size() == 4);
    CHECK(try_each() == 0);
  }
  CHECK(try_each() == 4);
  CHECK(meta::shard_set(0).size() == 1);  // never without a shard
}

TEST_CASE("walk_oldest over the set merges its shards' lists oldest first") {
  meta::shard_set shards(3);
  std::uint64_t use = 0;
  std::vector<std::string> keys;
  for (int i = 0; i < 12; ++i) keys.push_back("w" + std::to_string(i));
  for (auto& k : keys) {
    const auto key = meta::shard_set::hashed(k);
    meta::object_shard& shard = shards.shard_for(key);
    shard.commit(shard.insert_pending(key), ++use);
  }
  std::vector<std::string> seen;
  auto locks = shards.lock_all();
  shards.walk_oldest(&meta::object_shard::lru, meta::every_object, [&](meta::object_shard&, meta::object_entry& e) {
    seen.emplace_back(e.key());
    return true;
  });
  CHECK(seen == keys);
}

}  // TEST_SUITE
