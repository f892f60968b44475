#pragma once
// What the benchmarks share: a timed loop over an awaitable step, latency
// percentiles, throughput, and the JSON file written beside the table.

#include <boost/asio/awaitable.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace corokv::bench {

using bench_clock = std::chrono::steady_clock;

// Calls step(round) until `seconds` passed (at least once); returns the
// rounds done and the seconds they took.
template <class Step>
boost::asio::awaitable<std::pair<std::uint64_t, double>> timed(double seconds, Step step) {
  std::uint64_t rounds = 0;
  const auto start = bench_clock::now();
  const auto stop = start + std::chrono::duration<double>(seconds);
  do {
    co_await step(rounds++);
  } while (bench_clock::now() < stop);
  co_return std::pair{rounds, std::chrono::duration<double>(bench_clock::now() - start).count()};
}

inline double gib_per_s(std::uint64_t bytes, double seconds) {
  return static_cast<double>(bytes) / seconds / static_cast<double>(1u << 30);
}

struct latency {
  double p50_us = 0, p99_us = 0, mean_us = 0;
};

// Summarises per-round times in microseconds (reorders them).
inline latency percentiles(std::vector<double>& us) {
  if (us.empty()) return {};
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))]; };
  double sum = 0;
  for (double v : us) sum += v;
  return {at(0.50), at(0.99), sum / static_cast<double>(us.size())};
}

inline void write_json(const std::string& path, const std::string& name, double seconds, const nlohmann::json& results) {
  if (path.empty()) return;
  std::ofstream(path) << nlohmann::json{{"benchmark", name}, {"seconds_per_point", seconds}, {"results", results}}.dump(2)
                      << '\n';
  fmt::print("JSON written to {}\n", path);
}

}  // namespace corokv::bench
