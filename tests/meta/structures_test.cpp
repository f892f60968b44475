// The extent allocator, the error category and the key vocabulary.

#include <corokv/error.hpp>
#include <corokv/meta/extent_allocator.hpp>
#include <corokv/types.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

using corokv::meta::extent_allocator;

TEST_CASE("allocator rounds sizes to the alignment and accounts used bytes") {
  extent_allocator a(1000, 64);
  CHECK(a.capacity() == 960);  // whole alignment units only
  auto x = a.allocate(1);
  REQUIRE(x);
  CHECK(*x == 0);
  CHECK(a.used() == 64);
  auto y = a.allocate(65);
  REQUIRE(y);
  CHECK(*y == 64);
  CHECK(a.used() == 64 + 128);
  CHECK(a.check_invariants().empty());
}

TEST_CASE("allocator refuses zero, oversize and exhausted requests") {
  extent_allocator a(256, 64);
  CHECK_FALSE(a.allocate(0));
  CHECK_FALSE(a.allocate(257));
  CHECK(a.allocate(256));
  CHECK_FALSE(a.allocate(1));
}

TEST_CASE("allocator picks the best fitting extent, lowest address first") {
  extent_allocator a(64 * 10, 64);
  std::vector<std::uint64_t> blocks;
  for (int i = 0; i < 10; ++i) blocks.push_back(*a.allocate(64));
  // Free extents of 3 units at 0, 1 unit at 256, 2 units at 448.
  for (int i : {0, 1, 2, 4, 7, 8}) REQUIRE(a.free(blocks[i], 64));
  CHECK(a.free_extents() == 3);
  CHECK(*a.allocate(64) == 256);   // exact fit beats the larger extents
  CHECK(*a.allocate(128) == 448);  // the 2-unit extent, not the 3-unit one
  CHECK(*a.allocate(64) == 0);     // the 3-unit extent, from its start
  CHECK(a.check_invariants().empty());
}

TEST_CASE("freeing coalesces neighbours so an emptied segment is one extent again") {
  extent_allocator a(64 * 8, 64);
  std::vector<std::uint64_t> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(*a.allocate(64));
  for (int i : {1, 3, 5, 7, 0, 2, 6, 4}) {
    REQUIRE(a.free(blocks[i], 64));
    CHECK(a.check_invariants().empty());
  }
  CHECK(a.free_extents() == 1);
  CHECK(a.largest_free() == 64 * 8);
  CHECK(a.allocate(64 * 8));
}

TEST_CASE("double and out-of-range frees are refused without corrupting state") {
  extent_allocator a(64 * 4, 64);
  auto x = *a.allocate(64);
  REQUIRE(a.free(x, 64));
  CHECK_FALSE(a.free(x, 64));        // already free
  CHECK_FALSE(a.free(64 * 4, 64));   // past the end
  CHECK_FALSE(a.free(3, 64));        // misaligned
  CHECK(a.used() == 0);
  CHECK(a.check_invariants().empty());
}

TEST_CASE("every errc has its own message under the corokv category") {
  std::set<std::string> messages;
  for (int c = 0; c <= static_cast<int>(corokv::last_errc); ++c) {
    std::error_code ec = static_cast<corokv::errc>(c);
    CHECK(std::string(ec.category().name()) == "corokv");
    CHECK(ec.message() != "unknown corokv error");
    messages.insert(ec.message());
  }
  CHECK(messages.size() == static_cast<std::size_t>(corokv::last_errc) + 1);
  std::error_code ok = corokv::errc::success;
  CHECK_FALSE(ok);
  std::error_code nf = corokv::errc::not_found;
  CHECK(nf == corokv::errc::not_found);
}

TEST_CASE("key rules: 1..max_key_length bytes") {
  CHECK(corokv::check_key("") == corokv::errc::invalid_key);
  CHECK(corokv::check_key("a") == corokv::errc::success);
  CHECK(corokv::check_key(std::string(corokv::max_key_length, 'x')) == corokv::errc::success);
  CHECK(corokv::check_key(std::string(corokv::max_key_length + 1, 'x')) == corokv::errc::invalid_key);
}

TEST_CASE("key_span views strings and string_views alike, and slices") {
  std::vector<std::string> owned{"a", "bb", "ccc"};
  std::vector<std::string_view> views{"x", "yy"};
  corokv::key_span a = owned, b = views;
  CHECK(a.size() == 3);
  CHECK(a[2] == "ccc");
  CHECK(b[1] == "yy");
  auto tail = a.subspan(1, 2);
  CHECK(tail.size() == 2);
  CHECK(tail[0] == "bb");
  auto vtail = b.subspan(1, 1);
  CHECK(vtail[0] == "yy");
}

TEST_CASE("replica_list keeps order when erasing") {
  corokv::replica_list l;
  for (std::uint64_t s = 1; s <= 4; ++s) l.push_back({s, s, 0, 10});
  CHECK(l.full());
  CHECK(l.erase_if([](auto& r) { return r.segment % 2 == 0; }) == 2);
  REQUIRE(l.size() == 2);
  CHECK(l[0].segment == 1);
  CHECK(l[1].segment == 3);
}

#include <corokv/detail/batch_plan.hpp>
#include <corokv/detail/hash.hpp>
#include <corokv/meta/object_table.hpp>

#include <map>
#include <random>

TEST_CASE("object table: random inserts and erases under heavy collisions match a model") {
  // Hashes drawn from a tiny range force long clusters, wrap-around at the
  // end of the slot array and backward shifts across them.
  std::mt19937 rng(7);
  corokv::meta::object_table table;
  std::map<std::string, std::uint64_t> model;
  for (int step = 0; step < 20000; ++step) {
    const std::string key = "k" + std::to_string(rng() % 300);
    const std::uint64_t hash = (rng() % 2 == 0) ? corokv::detail::hash_key(key) % 7 : corokv::detail::hash_key(key);
    auto it = model.find(key);
    if (it == model.end()) {
      if (!table.find(key, hash)) {
        corokv::meta::object_entry& e = table.insert(key, hash);
        CHECK(e.key() == key);
        model.emplace(key, hash);
      }
    } else if (rng() % 2) {
      corokv::meta::object_entry* e = table.find(key, it->second);
      REQUIRE(e);
      table.erase(e);
      model.erase(it);
    }
    if (step % 500 == 0) {
      REQUIRE(table.size() == model.size());
      for (auto& [k, h] : model) {
        auto* e = table.find(k, h);
        REQUIRE(e);
        CHECK(e->key() == k);
      }
    }
  }
  std::size_t visited = 0;
  table.for_each([&](const corokv::meta::object_entry& e) {
    ++visited;
    CHECK(model.count(std::string(e.key())) == 1);
  });
  CHECK(visited == model.size());
}

TEST_CASE("object table keeps keys of every length intact, beside their entries") {
  corokv::meta::object_table table;
  std::vector<std::string> keys;
  for (std::size_t len : {1, 7, 8, 9, 63, 64, 65, 1024}) keys.push_back(std::string(len, static_cast<char>('a' + len % 26)));
  for (auto& k : keys) table.insert(k, corokv::detail::hash_key(k)).size = k.size();
  for (auto& k : keys) {
    auto* e = table.find(k, corokv::detail::hash_key(k));
    REQUIRE(e);
    CHECK(e->key() == k);
    CHECK(e->size == k.size());
  }
  CHECK_FALSE(table.find("absent", corokv::detail::hash_key("absent")));
}

TEST_CASE("batch plan: admission, duplicates and grouping by chunk and shard") {
  std::vector<std::string> keys;
  for (int i = 0; i < 1500; ++i) keys.push_back("key" + std::to_string(i % 1200));  // 300 repeats
  keys[5] = "";
  corokv::detail::batch_plan plan;
  plan.build(keys, 16);
  CHECK(plan.admission(5) == corokv::errc::invalid_key);
  CHECK(plan.admission(1200) == corokv::errc::duplicate_key);  // "key0" again
  CHECK(plan.admission(0) == corokv::errc::success);
  CHECK(plan.chunk_count() == 3);
  std::vector<int> seen(keys.size(), 0);
  for (std::size_t c = 0; c < plan.chunk_count(); ++c)
    for (std::size_t s = 0; s < plan.shard_count(); ++s) {
      std::uint32_t previous = 0;
      bool first = true;
      for (auto i : plan.group(c, s)) {
        CHECK(i / corokv::detail::batch_plan::chunk_size == c);
        CHECK(corokv::detail::shard_of(plan.hash(i), 16) == s);
        CHECK((first || i > previous));  // batch order within a group
        previous = i;
        first = false;
        ++seen[i];
      }
    }
  for (std::size_t i = 0; i < keys.size(); ++i) CHECK(seen[i] == (plan.admission(i) == corokv::errc::success ? 1 : 0));
}

TEST_CASE("the key hash spreads similar keys") {
  std::set<std::uint64_t> hashes, low_bits;
  for (int i = 0; i < 4096; ++i) {
    auto h = corokv::detail::hash_key("prefix-" + std::to_string(i));
    hashes.insert(h);
    low_bits.insert(h & 4095);
  }
  CHECK(hashes.size() == 4096);
  CHECK(low_bits.size() > 2400);  // a uniform hash fills ~63% of 4096 buckets
  CHECK(corokv::detail::hash_key("a") != corokv::detail::hash_key("b"));
  CHECK(corokv::detail::hash_key("") != corokv::detail::hash_key(std::string_view("\0", 1)));
}
