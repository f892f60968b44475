// corokv quickstart: the metadata service on its own, in one process.
//
// Two nodes contribute memory, a writer puts a chain of KV blocks (two-phase,
// two replicas each), a serving engine finds its longest cached prefix and
// queries the chain (one batched call, leases granted), a block is removed
// while leased, and maintenance reclaims it once the lease ends. Every number
// printed comes from the service's own answers and counters.

#include <corokv/corokv.hpp>

#include <fmt/format.h>

#include <chrono>
#include <string>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;

namespace {

void print_usage(const meta::service& svc, const char* when) {
  const auto s = svc.stats();
  fmt::print("  {:<34} objects {:>3}  pending {:>2}  removed-but-leased {:>2}  used {:>9} of {:>9} bytes\n", when,
             s.objects, s.pending_puts, s.removed_leased, s.pool.used, s.pool.capacity);
}

int fail(const char* what, errc e) {
  fmt::print(stderr, "quickstart: {} failed: {}\n", what, std::error_code(e).message());
  return 1;
}

}  // namespace

int main() {
  meta::manual_clock clock;  // explicit time, so the lease story is reproducible
  meta::service_options options;
  options.lease_ttl = 5s;
  meta::service svc(options, clock.source());

  fmt::print("corokv quickstart — metadata service\n\n");
  for (node_id node : {1, 2})
    if (auto m = svc.mount_segment(node, 64 << 20); m.status != errc::success) return fail("mount", m.status);
  print_usage(svc, "two nodes mounted 64 MiB each:");

  // A prompt's KV cache: 8 blocks of 256 KiB under prefix-hash keys.
  std::vector<std::string> chain;
  for (int i = 0; i < 8; ++i) chain.push_back(fmt::format("prompt-42/block-{:02}", i));
  std::vector<std::uint64_t> sizes(chain.size(), 256 << 10);
  std::vector<put_start_result> started(chain.size());
  if (auto e = svc.put_start(chain, sizes, put_options{2}, 0, started); e != errc::success) return fail("put_start", e);
  print_usage(svc, "after put_start (invisible yet):");
  std::vector<version_t> versions;
  for (auto& s : started) {
    if (!s.ok()) return fail("put_start key", s.status);
    versions.push_back(s.version);
  }
  std::vector<errc> ended(chain.size());
  if (auto e = svc.put_end(chain, versions, ended); e != errc::success) return fail("put_end", e);
  print_usage(svc, "after put_end:");

  // The engine asks how much of a longer prompt is cached.
  std::vector<std::string> longer = chain;
  longer.push_back("prompt-42/block-08");
  longer.push_back("prompt-42/block-09");
  const prefix_result prefix = svc.exist_prefix(longer);
  fmt::print("\nprefix lookup over {} keys: {} cached, stopped by '{}'\n", longer.size(), prefix.matched,
             std::error_code(prefix.stopped_by).message());

  std::vector<query_result> q(chain.size());
  if (auto e = svc.query(chain, q); e != errc::success) return fail("query", e);
  fmt::print("\nbatch query, one call for {} keys:\n", chain.size());
  fmt::print("  {:<20} {:>8} {:>20} {:>8}  {}\n", "key", "size", "version", "lease", "replicas (segment@offset)");
  for (std::size_t i = 0; i < chain.size(); ++i) {
    std::string where;
    for (auto& r : q[i].replicas) where += fmt::format("{}@{} ", r.segment, r.offset);
    fmt::print("  {:<20} {:>8} {:>20} {:>7}s  {}\n", chain[i], q[i].size, q[i].version,
               std::chrono::duration_cast<std::chrono::seconds>(q[i].lease_deadline - clock.now()).count(), where);
  }

  std::vector<std::string> first{chain[0]};
  std::vector<errc> removed(1);
  svc.remove(first, removed);
  fmt::print("\nremove {} while leased: {}\n", chain[0], std::error_code(removed[0]).message());
  print_usage(svc, "hidden, memory still held:");
  clock.advance(5s);
  const auto report = svc.maintain();
  fmt::print("5 s later, maintenance reclaimed {} removed object(s)\n", report.reclaimed_removed);
  print_usage(svc, "after the lease ended:");

  const std::string invariants = svc.check_invariants();
  fmt::print("\nallocator invariants: {}\n", invariants.empty() ? "hold" : invariants);
  return invariants.empty() ? 0 : 1;
}
