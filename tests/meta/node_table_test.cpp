// meta/node_table.hpp: liveness without a service around it.

#include <corokv/meta/node_table.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;

namespace {
const time_point t0 = time_point{} + 1h;
}

TEST_SUITE("node_table") {

TEST_CASE("nodes are enrolled, heard from and listed, an unknown node's heartbeat is refused") {
  meta::node_table nodes;
  int journaled = 0;
  nodes.enroll(1, t0, true, [&] { ++journaled; });
  nodes.enroll(2, t0, false, [&] { ++journaled; });
  nodes.enroll(1, t0, true, [&] { ++journaled; });  // again: still one node
  CHECK(journaled == 3);
  CHECK(nodes.size() == 2);
  CHECK(nodes.known(1));
  CHECK_FALSE(nodes.known(3));
  CHECK(nodes.heard(1, t0 + 1s));
  CHECK_FALSE(nodes.heard(3, t0 + 1s));
  auto listed = nodes.list();
  std::sort(listed.begin(), listed.end());
  CHECK(listed == std::vector<node_id>{1, 2});
}

TEST_CASE("expire takes expiring nodes silent for the ttl, runs the clean-up for each, and spares the others") {
  meta::node_table nodes;
  nodes.enroll(1, t0, true, [] {});
  nodes.enroll(2, t0, true, [] {});
  nodes.enroll(3, t0, false, [] {});  // in-process: never dies of silence
  CHECK(nodes.heard(2, t0 + 5s));
  std::vector<node_id> dead;
  CHECK(nodes.expire(t0 + 9s, 10s, [&](node_id n) { dead.push_back(n); }) == 0);
  CHECK(nodes.expire(t0 + 10s, 10s, [&](node_id n) { dead.push_back(n); }) == 1);
  CHECK(dead == std::vector<node_id>{1});
  CHECK_FALSE(nodes.known(1));
  CHECK(nodes.known(2));
  CHECK(nodes.known(3));
  CHECK(nodes.expire(t0 + 1h, 10s, [](node_id) {}) == 1);  // node 2 too, node 3 never
  CHECK(nodes.list() == std::vector<node_id>{3});
}

TEST_CASE("leave runs the clean-up only for a known node, add_if_absent keeps an existing node as it is") {
  meta::node_table nodes;
  int cleaned = 0;
  CHECK_FALSE(nodes.leave(7, [&] { ++cleaned; }));
  nodes.enroll(7, t0, false, [] {});
  CHECK(nodes.leave(7, [&] { ++cleaned; }));
  CHECK(cleaned == 1);
  CHECK(nodes.locked([&](meta::node_table::map& m) { return meta::node_table::add_if_absent(m, 8, t0); }));
  CHECK_FALSE(nodes.locked([&](meta::node_table::map& m) { return meta::node_table::add_if_absent(m, 8, t0 + 1h); }));
  // Added as expiring, alive at t0: it dies of silence.
  CHECK(nodes.expire(t0 + 11s, 10s, [](node_id) {}) == 1);
}

}  // TEST_SUITE
