// The client's metadata cache without I/O: answers older than an
// invalidation of their key are refused.

#include <corokv/client/metadata_cache.hpp>

#include "../support/query_results.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;
using client::metadata_cache;
using test::leased;
using test::t0;

TEST_CASE("metadata cache: an answer to a query sent before an invalidation of its key does not enter") {
  metadata_cache cache(16);
  std::vector<std::string> keys{"k", "other"};
  std::vector<query_result> old_answer{leased(10, 1, t0 + 5s), leased(10, 2, t0 + 5s)};
  auto sent = cache.begin_query();                                          // a query goes out
  cache.locked([&](metadata_cache::view& v) { v.invalidate("k"); });        // the store removes and puts "k"
  auto fresh = cache.begin_query();                                         // a later query
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, old_answer, sent); });  // the old answer lands
  cache.end_query(sent);
  cache.locked([&](metadata_cache::view& v) {
    CHECK(v.find("k", t0) == nullptr);       // refused: older than the invalidation
    CHECK(v.find("other", t0) != nullptr);   // untouched keys are stored
  });
  std::vector<query_result> new_answer{leased(10, 3, t0 + 5s), leased(10, 2, t0 + 5s)};
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, new_answer, fresh); });
  cache.end_query(fresh);
  cache.locked([&](metadata_cache::view& v) {
    REQUIRE(v.find("k", t0) != nullptr);
    CHECK(v.find("k", t0)->version == 3);
  });
}

TEST_CASE("metadata cache: with more invalidations in flight than it records, older answers are refused whole") {
  metadata_cache cache(4096);
  auto sent = cache.begin_query();
  cache.locked([&](metadata_cache::view& v) {
    for (int i = 0; i < 2000; ++i) v.invalidate("x" + std::to_string(i));
  });
  std::vector<std::string> keys{"untouched"};
  std::vector<query_result> answer{leased(10, 1, t0 + 5s)};
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, answer, sent); });
  cache.end_query(sent);
  cache.locked([&](metadata_cache::view& v) { CHECK(v.find("untouched", t0) == nullptr); });
  // With no query out any more, the record is cleared: new answers enter.
  auto later = cache.begin_query();
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, answer, later); });
  cache.end_query(later);
  cache.locked([&](metadata_cache::view& v) { CHECK(v.find("untouched", t0) != nullptr); });
}
