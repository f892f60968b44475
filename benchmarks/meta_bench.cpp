// Metadata service throughput: key-queries/s, exists/s and put cycles/s
// (put_start + put_end + remove per key) at several batch sizes, on 1 and 2
// threads. Prints a table and writes JSON (--json PATH).
//
//   meta_bench [--seconds S] [--keys N] [--json PATH]

#include <corokv/meta/service.hpp>

#include "bench_support.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace corokv;
using bench_clock = std::chrono::steady_clock;

namespace {

struct config {
  double seconds = 0.5;
  std::size_t keys = 1 << 18;
  std::string json_path;
};

// A key as a serving engine makes it: a hex prefix hash.
std::string make_key(std::uint64_t i) { return fmt::format("kv-{:016x}-{:08x}", i * 0x9E3779B97F4A7C15ull, i); }

// Runs `batch_fn(thread, round)` on `threads` threads for about `seconds`;
// returns keys per second over all threads.
template <class F>
double run(std::size_t threads, std::size_t batch, double seconds, F batch_fn) {
  std::atomic<bool> stop{false};
  std::vector<std::uint64_t> done(threads, 0);
  std::vector<std::thread> pool;
  const auto start = bench_clock::now();
  for (std::size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::uint64_t rounds = 0;
      while (!stop.load(std::memory_order_relaxed)) batch_fn(t, rounds++);
      done[t] = rounds * batch;
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(bench_clock::now() - start).count();
  std::uint64_t total = 0;
  for (auto d : done) total += d;
  return static_cast<double>(total) / elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  bench::arguments args("meta_bench", {{"--seconds", "S"}, {"--keys", "N"}, {"--json", "PATH"}});
  if (!args.parse(argc, argv)) return 2;
  cfg.seconds = args.number("--seconds", cfg.seconds);
  cfg.keys = static_cast<decltype(cfg.keys)>(args.count("--keys", cfg.keys));
  cfg.json_path = args.text("--json", cfg.json_path);

  if (cfg.keys <= 4096) {
    std::fprintf(stderr, "meta_bench: --keys must exceed the largest batch (4096)\n");
    return 2;
  }
  meta::service_options opts;
  opts.shards = 16;
  opts.high_watermark = 1.0;  // measure lookups, not eviction
  meta::service svc(opts);
  for (node_id n = 1; n <= 4; ++n) svc.mount_segment(n, std::uint64_t{16} << 30);  // metadata only: no memory behind it

  std::vector<std::string> keys;
  keys.reserve(cfg.keys);
  for (std::uint64_t i = 0; i < cfg.keys; ++i) keys.push_back(make_key(i));
  {
    std::vector<std::uint64_t> sizes(keys.size(), 64 << 10);
    std::vector<put_start_result> started(keys.size());
    svc.put_start(keys, sizes, {}, 0, started);
    std::vector<version_t> versions;
    for (auto& s : started) versions.push_back(s.version);
    std::vector<errc> ended(keys.size());
    svc.put_end(keys, versions, ended);
    for (auto e : ended)
      if (e != errc::success) {
        std::fprintf(stderr, "preload failed: %s\n", std::error_code(e).message().c_str());
        return 1;
      }
  }

  nlohmann::json results = nlohmann::json::array();
  fmt::print("{:>8} {:>7} {:>16} {:>16} {:>16} {:>18}\n", "batch", "threads", "queries/s", "exists/s",
             "put cycles/s", "queries/s/thread");
  for (std::size_t batch : {1, 16, 256, 4096}) {
    for (std::size_t threads : {1, 2}) {
      // Each thread walks its own random permutation of the preloaded keys,
      // copied in that order: a batch's keys lie together in memory, as they
      // do in a decoded request or a caller's vector, while the table entries
      // they hit are spread over the whole table.
      std::vector<std::vector<std::string>> streams(threads);
      for (std::size_t t = 0; t < threads; ++t) {
        std::mt19937_64 rng(t + 1);
        std::vector<std::string_view> order(keys.begin(), keys.end());
        std::shuffle(order.begin(), order.end(), rng);
        streams[t].reserve(order.size());
        for (auto k : order) streams[t].emplace_back(k);  // allocated in stream order, without frees between
      }
      auto window = [&](std::size_t t, std::uint64_t round) {
        const std::size_t offset = (round * batch) % (keys.size() - batch);
        return std::span<const std::string>(streams[t]).subspan(offset, batch);
      };
      std::vector<std::vector<query_result>> qout(threads, std::vector<query_result>(batch));
      std::vector<std::vector<errc>> eout(threads, std::vector<errc>(batch));
      const double qps = run(threads, batch, cfg.seconds, [&](std::size_t t, std::uint64_t r) {
        svc.query(window(t, r), qout[t]);
      });
      const double eps = run(threads, batch, cfg.seconds, [&](std::size_t t, std::uint64_t r) {
        svc.exist(window(t, r), eout[t]);
      });

      // Put cycles on fresh keys, removed again so that space stays constant.
      std::vector<std::vector<std::string>> fresh(threads);
      for (std::size_t t = 0; t < threads; ++t)
        for (std::size_t i = 0; i < batch; ++i) fresh[t].push_back(fmt::format("put-{}-{:08x}", t, i));
      std::vector<std::uint64_t> sizes(batch, 64 << 10);
      std::vector<std::vector<put_start_result>> started(threads, std::vector<put_start_result>(batch));
      std::vector<std::vector<version_t>> versions(threads, std::vector<version_t>(batch));
      std::atomic<std::uint64_t> put_failures{0};
      const double pps = run(threads, batch, cfg.seconds, [&](std::size_t t, std::uint64_t) {
        svc.put_start(fresh[t], sizes, {}, 0, started[t]);
        for (std::size_t i = 0; i < batch; ++i) versions[t][i] = started[t][i].version;
        svc.put_end(fresh[t], versions[t], eout[t]);
        for (auto e : eout[t]) put_failures += e != errc::success;
        svc.remove(fresh[t], eout[t]);
      });
      if (put_failures) {
        std::fprintf(stderr, "%llu put cycles failed\n", static_cast<unsigned long long>(put_failures.load()));
        return 1;
      }

      fmt::print("{:>8} {:>7} {:>16.0f} {:>16.0f} {:>16.0f} {:>18.0f}\n", batch, threads, qps, eps, pps,
                 qps / static_cast<double>(threads));
      results.push_back({{"batch", batch},
                         {"threads", threads},
                         {"queries_per_s", qps},
                         {"exists_per_s", eps},
                         {"put_cycles_per_s", pps},
                         {"queries_per_s_per_thread", qps / static_cast<double>(threads)}});
    }
  }
  nlohmann::json doc{{"benchmark", "meta_bench"},
                     {"preloaded_keys", cfg.keys},
                     {"seconds_per_point", cfg.seconds},
                     {"hardware_threads", std::thread::hardware_concurrency()},
                     {"results", results}};
  if (!cfg.json_path.empty()) {
    std::ofstream(cfg.json_path) << doc.dump(2) << '\n';
    fmt::print("JSON written to {}\n", cfg.json_path);
  }
  return 0;
}
