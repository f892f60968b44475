// Thousands of seeded random operations. After every step: allocations never
// overlap, the pool's accounting equals the space live objects hold, and a
// found key always carries the version the model last committed for it. At
// the end, everything freed must be reusable: each emptied segment takes one
// object of its whole capacity.

#include "../support/service_fixture.hpp"

#include <map>
#include <random>

using namespace corokv;
using namespace corokv::test;

namespace {

struct pending_put {
  std::vector<std::string> keys;
  std::vector<put_start_result> started;
};

}  // namespace

TEST_CASE("randomized mixed operations keep the allocator and table consistent") {
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
    meta::service_options o = small_options();
    o.high_watermark = 0.9;
    o.low_watermark = 0.6;
    service_fixture f(o);

    std::vector<node_id> live_nodes;
    for (node_id n = 1; n <= 3; ++n) {
      f.mount(n, 64 * (64 + 16 * n));
      live_nodes.push_back(n);
    }
    std::map<std::string, version_t> committed;  // what the model last committed
    std::vector<pending_put> in_flight;
    const auto key_of = [&](std::size_t i) { return "key-" + std::to_string(i); };
    auto random_keys = [&](std::size_t n) {
      std::vector<std::string> keys;
      for (std::size_t i = 0; i < n; ++i) keys.push_back(key_of(pick(160)));
      return keys;
    };

    for (int step = 0; step < 4000; ++step) {
      CAPTURE(step);
      const std::size_t op = pick(100);
      if (op < 30) {  // put_start of a random batch, sizes 1..2000 bytes, 1..3 replicas
        auto keys = random_keys(1 + pick(8));
        std::vector<std::uint64_t> sizes;
        for (std::size_t i = 0; i < keys.size(); ++i) sizes.push_back(1 + pick(2000));
        std::vector<put_start_result> started(keys.size());
        REQUIRE(f.svc.put_start(keys, sizes, put_options{1 + pick(3)}, 0, started) == errc::success);
        for (std::size_t i = 0; i < keys.size(); ++i)
          if (started[i].ok()) {
            CHECK(started[i].replicas.size() >= 1);
            for (auto& r : started[i].replicas) CHECK(r.length == sizes[i]);
          }
        in_flight.push_back({std::move(keys), std::move(started)});
      } else if (op < 50 && !in_flight.empty()) {  // put_end or put_revoke of an earlier batch
        const std::size_t which = pick(in_flight.size());
        pending_put p = std::move(in_flight[which]);
        in_flight.erase(in_flight.begin() + static_cast<std::ptrdiff_t>(which));
        std::vector<version_t> versions;
        for (auto& s : p.started) versions.push_back(s.version);
        std::vector<errc> out(p.keys.size());
        if (pick(4) == 0) {
          REQUIRE(f.svc.put_revoke(p.keys, versions, out) == errc::success);
        } else {
          REQUIRE(f.svc.put_end(p.keys, versions, out) == errc::success);
          for (std::size_t i = 0; i < p.keys.size(); ++i)
            if (out[i] == errc::success && p.started[i].ok()) committed[p.keys[i]] = versions[i];
        }
      } else if (op < 70) {  // query: a found key has the model's version
        auto keys = random_keys(1 + pick(16));
        auto q = f.query(keys);
        for (std::size_t i = 0; i < keys.size(); ++i) {
          if (!q[i].ok()) continue;
          auto it = committed.find(keys[i]);
          REQUIRE(it != committed.end());
          CHECK(q[i].version == it->second);
        }
      } else if (op < 80) {  // remove
        auto keys = random_keys(1 + pick(6));
        auto r = f.remove(keys);
        for (std::size_t i = 0; i < keys.size(); ++i)
          if (r[i] == errc::success) committed.erase(keys[i]);
      } else if (op < 85) {  // exist agrees with query on presence
        auto keys = random_keys(4);
        auto e = f.exist(keys);
        for (std::size_t i = 0; i < keys.size(); ++i)
          if (e[i] == errc::success) CHECK(committed.count(keys[i]) == 1);
      } else if (op < 95) {  // time passes; nodes heartbeat; maintenance
        f.clock.advance(std::chrono::milliseconds(200 + pick(2000)));
        for (node_id n : live_nodes) f.svc.heartbeat(n);
        f.svc.maintain();
      } else if (op < 97 && live_nodes.size() > 1) {  // a node dies
        const std::size_t which = pick(live_nodes.size());
        REQUIRE(f.svc.unregister_node(live_nodes[which]) == errc::success);
        live_nodes.erase(live_nodes.begin() + static_cast<std::ptrdiff_t>(which));
      } else if (op < 99) {  // a node joins
        const node_id n = 10 + static_cast<node_id>(step);
        f.mount(n, 64 * (32 + pick(64)));
        live_nodes.push_back(n);
      }
      const std::string err = f.svc.check_invariants();
      REQUIRE_MESSAGE(err.empty(), err);
    }

    // The run must have reached the interesting paths, or it proves little.
    const auto mid = f.svc.stats();
    CHECK(mid.evicted_total > 0);
    CHECK(mid.expired_puts_total > 0);
    CHECK(committed.size() > 10);

    // Drain: revoke what is pending, let every lease end, remove everything.
    for (auto& p : in_flight) {
      std::vector<version_t> versions;
      for (auto& s : p.started) versions.push_back(s.version);
      std::vector<errc> out(p.keys.size());
      f.svc.put_revoke(p.keys, versions, out);
    }
    std::vector<std::string> all;
    for (auto& [k, v] : committed) all.push_back(k);
    f.remove(all);
    f.clock.advance(std::chrono::minutes(1));
    for (node_id n : live_nodes) f.svc.heartbeat(n);
    f.svc.maintain();
    auto stats = f.svc.stats();
    CHECK(stats.objects == 0);
    CHECK(stats.pending_puts == 0);
    CHECK(stats.removed_leased == 0);
    CHECK(stats.pool.used == 0);
    // Freed space is reusable: each segment takes one object of its full size
    // (largest first, so each object can only land in a segment it fills).
    auto segments = f.svc.segments();
    std::sort(segments.begin(), segments.end(), [](auto& a, auto& b) { return a.size > b.size; });
    for (auto& seg : segments) {
      const std::uint64_t whole = seg.size / 64 * 64;
      std::vector<std::string> keys{"whole-" + std::to_string(seg.id)};
      std::vector<std::uint64_t> sizes{whole};
      std::vector<put_start_result> out(1);
      REQUIRE(f.svc.put_start(keys, sizes, {}, 0, out) == errc::success);
      CHECK(out[0].ok());
    }
    CHECK(f.used() == stats.pool.capacity);
    f.check();
  }
}
