#pragma once
// What the benchmarks share: their command line, a timed loop over an
// awaitable step, latency percentiles, throughput, and the JSON file written
// beside the table.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corokv::bench {

// The command line: "--flag value" pairs, each flag one the program names
// (with what its value is, for the usage line). parse() says what is wrong
// and prints the usage on an unknown flag or one without a value; the
// program then exits 2.
class arguments {
 public:
  struct flag {
    std::string name;   // "--seconds"
    std::string value;  // "S", for the usage line
  };

  arguments(std::string program, std::vector<flag> flags) : program_(std::move(program)), flags_(std::move(flags)) {}

  bool parse(int argc, char** argv) {
    for (int i = 1; i < argc; i += 2) {
      const std::string name = argv[i];
      const bool known = std::any_of(flags_.begin(), flags_.end(), [&](const flag& f) { return f.name == name; });
      if (!known || i + 1 >= argc) {
        if (known) std::fprintf(stderr, "%s: %s needs a value\n", program_.c_str(), name.c_str());
        std::fprintf(stderr, "%s\n", usage().c_str());
        return false;
      }
      given_[name] = argv[i + 1];
    }
    return true;
  }

  bool has(std::string_view name) const { return given_.count(std::string(name)) != 0; }
  std::string text(std::string_view name, std::string otherwise) const {
    const auto it = given_.find(std::string(name));
    return it == given_.end() ? otherwise : it->second;
  }
  double number(std::string_view name, double otherwise) const {
    const auto it = given_.find(std::string(name));
    return it == given_.end() ? otherwise : std::stod(it->second);
  }
  std::uint64_t count(std::string_view name, std::uint64_t otherwise) const {
    const auto it = given_.find(std::string(name));
    return it == given_.end() ? otherwise : std::stoull(it->second);
  }

  std::string usage() const {
    std::string u = "usage: " + program_;
    for (const flag& f : flags_) u += " [" + f.name + " " + f.value + "]";
    return u;
  }

 private:
  std::string program_;
  std::vector<flag> flags_;
  std::map<std::string, std::string, std::less<>> given_;
};

using bench_clock = std::chrono::steady_clock;

// Runs a coroutine on `io` to its end (what it throws is rethrown).
template <class T>
T run_to_completion(boost::asio::io_context& io, boost::asio::awaitable<T> task) {
  auto done = boost::asio::co_spawn(io, std::move(task), boost::asio::use_future);
  io.restart();
  io.run();
  return done.get();
}

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

// Compared modes measured in turns: each round runs every mode for `reps`
// batches, in an order that rotates from round to round, until `seconds`
// have passed (at least `min_rounds` rounds). On a noisy shared machine the
// drift between rounds then touches every mode alike, and each round yields
// its own ratio between two modes. step(mode, batch_number) runs one batch
// of a mode; the result holds, per mode, each round's µs per batch.
template <class Step>
boost::asio::awaitable<std::vector<std::vector<double>>> interleaved(double seconds, std::size_t modes, std::size_t reps,
                                                                     Step step, std::size_t min_rounds = 5) {
  std::vector<std::vector<double>> us(modes);
  std::vector<std::uint64_t> done(modes, 0);
  const auto stop = bench_clock::now() + std::chrono::duration<double>(seconds);
  for (std::size_t round = 0; round < min_rounds || bench_clock::now() < stop; ++round) {
    for (std::size_t k = 0; k < modes; ++k) {
      const std::size_t mode = (round + k) % modes;
      const auto t0 = bench_clock::now();
      for (std::size_t r = 0; r < reps; ++r) co_await step(mode, done[mode]++);
      us[mode].push_back(std::chrono::duration<double, std::micro>(bench_clock::now() - t0).count() /
                         static_cast<double>(reps));
    }
  }
  co_return us;
}

// How many batches a round should run so that it lasts about `target_us`,
// given one batch's time.
inline std::size_t reps_for(double one_batch_us, double target_us = 200) {
  return static_cast<std::size_t>(std::clamp(target_us / std::max(one_batch_us, 0.01), 1.0, 2000.0));
}

// The q-quantile of some values (reorders them).
inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// One mode against a limit, from interleaved rounds: the median of each
// round's own ratio (limit time / mode time), with the 10th and 90th
// percentiles as the spread.
struct versus {
  double median_us = 0, limit_median_us = 0;
  double ratio = 0, ratio_p10 = 0, ratio_p90 = 0;
  std::size_t rounds = 0;
};
inline versus compare(const std::vector<double>& mode_us, const std::vector<double>& limit_us) {
  std::vector<double> ratios;
  for (std::size_t r = 0; r < std::min(mode_us.size(), limit_us.size()); ++r) ratios.push_back(limit_us[r] / mode_us[r]);
  return {quantile(mode_us, 0.5), quantile(limit_us, 0.5), quantile(ratios, 0.5), quantile(ratios, 0.1),
          quantile(ratios, 0.9), ratios.size()};
}

inline void write_json(const std::string& path, const std::string& name, double seconds, const nlohmann::json& results) {
  if (path.empty()) return;
  std::ofstream(path) << nlohmann::json{{"benchmark", name}, {"seconds_per_point", seconds}, {"results", results}}.dump(2)
                      << '\n';
  fmt::print("JSON written to {}\n", path);
}

}  // namespace corokv::bench
