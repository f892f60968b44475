#pragma once
// A metadata service on a hand-driven clock, with helpers that keep the
// behaviour tests short.

#include <corokv/meta/service.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace corokv::test {

using namespace std::chrono_literals;

inline meta::service_options small_options() {
  meta::service_options o;
  o.shards = 4;
  o.lease_ttl = 5s;
  o.put_timeout = 10s;
  o.node_ttl = 1h;  // liveness cases set their own; others never heartbeat
  o.high_watermark = 1.0;  // only allocation failures evict; the watermark case sets its own
  o.low_watermark = 0.5;
  o.alignment = 64;
  o.id_seed = 1000;
  return o;
}

struct service_fixture {
  meta::manual_clock clock;
  meta::service svc;

  explicit service_fixture(meta::service_options o = small_options()) : svc(o, clock.source()) {}

  segment_id mount(node_id node, std::uint64_t size) {
    auto r = svc.mount_segment(node, size);
    REQUIRE(r.status == errc::success);
    return r.id;
  }

  std::vector<put_start_result> start(const std::vector<std::string>& keys, std::uint64_t size,
                                      std::size_t replicas = 1, node_id writer = 0) {
    std::vector<std::uint64_t> sizes(keys.size(), size);
    std::vector<put_start_result> out(keys.size());
    REQUIRE(svc.put_start(keys, sizes, put_options{replicas}, writer, out) == errc::success);
    return out;
  }

  std::vector<errc> end(const std::vector<std::string>& keys, const std::vector<put_start_result>& started) {
    std::vector<version_t> versions;
    for (auto& s : started) versions.push_back(s.version);
    std::vector<errc> out(keys.size());
    REQUIRE(svc.put_end(keys, versions, out) == errc::success);
    return out;
  }

  // put_start + put_end; every key must succeed. Returns the versions.
  std::vector<version_t> put(const std::vector<std::string>& keys, std::uint64_t size, std::size_t replicas = 1) {
    auto started = start(keys, size, replicas);
    for (auto& s : started) REQUIRE(s.status == errc::success);
    for (auto e : end(keys, started)) REQUIRE(e == errc::success);
    std::vector<version_t> versions;
    for (auto& s : started) versions.push_back(s.version);
    return versions;
  }

  std::vector<query_result> query(const std::vector<std::string>& keys) {
    std::vector<query_result> out(keys.size());
    REQUIRE(svc.query(keys, out) == errc::success);
    return out;
  }

  std::vector<errc> exist(const std::vector<std::string>& keys) {
    std::vector<errc> out(keys.size());
    REQUIRE(svc.exist(keys, out) == errc::success);
    return out;
  }

  std::vector<errc> remove(const std::vector<std::string>& keys) {
    std::vector<errc> out(keys.size());
    REQUIRE(svc.remove(keys, out) == errc::success);
    return out;
  }

  std::size_t exist_prefix_matches(const std::vector<std::string>& keys) { return svc.exist_prefix(keys).matched; }

  std::uint64_t used() const { return svc.stats().pool.used; }

  void check() const {
    auto err = svc.check_invariants();
    CHECK_MESSAGE(err.empty(), err);
  }
};

inline std::vector<std::string> make_keys(const std::string& prefix, std::size_t n) {
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < n; ++i) keys.push_back(prefix + std::to_string(i));
  return keys;
}

}  // namespace corokv::test
