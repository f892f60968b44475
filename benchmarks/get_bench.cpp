// batch_get latency and throughput on the embedded store, against memcpy of
// the same bytes (from the same segment memory into the same destination
// buffers) measured in the same run.
//
// Modes, per batch size (1, 16, 64, 256) and value size (4 KiB, 64 KiB, 1 MiB):
//   memcpy       the limit: the same bytes from the same segment addresses
//   query+get    batch_query then batch_get with its results (1 round trip)
//   with-results batch_get with query results the caller already holds (0)
//   cache        batch_get through the store's metadata cache (0 once warm)
// Each batch reads a different window of a key set four batches large, so
// memcpy and the store see the same cache behaviour. The modes run in turns,
// round by round (bench_support.hpp: interleaved); each store mode's figure
// is the median over rounds of its ratio to that round's memcpy, with the
// 10th and 90th percentiles.
//
//   get_bench [--seconds S] [--json PATH]

#include <corokv/embedded.hpp>

#include "bench_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;

namespace {

struct dataset {
  std::vector<std::string> keys;
  std::vector<std::vector<std::string_view>> windows;  // one batch's keys each
  std::vector<std::vector<query_result>> leases;       // per window, refreshed per run
};

void check(const std::vector<get_result>& got) {
  for (auto& r : got)
    if (!r.ok()) throw std::runtime_error("batch_get failed: " + r.ec().message());
}

asio::awaitable<nlohmann::json> run_all(store& kv, double seconds) {
  nlohmann::json rows = nlohmann::json::array();
  fmt::print("{:>6} {:>8} {:>13} {:>10} {:>10} {:>9} {:>11} {:>15}\n", "batch", "value", "mode", "GiB/s", "µs/batch",
             "RTs/batch", "vs memcpy", "(p10 - p90)");
  for (std::size_t value_size : {std::size_t{4} << 10, std::size_t{64} << 10, std::size_t{1} << 20}) {
    for (std::size_t batch : {1, 16, 64, 256}) {
      // A key set four batches large, written once.
      const std::size_t windows = 4;
      dataset d;
      for (std::size_t i = 0; i < batch * windows; ++i)
        d.keys.push_back(fmt::format("bench/{}/{}/{:06}", value_size, batch, i));
      const std::string value(value_size, 'v');
      std::vector<asio::const_buffer> values(batch, asio::buffer(value));
      for (std::size_t w = 0; w < windows; ++w) {
        d.windows.emplace_back(d.keys.begin() + static_cast<std::ptrdiff_t>(w * batch),
                               d.keys.begin() + static_cast<std::ptrdiff_t>((w + 1) * batch));
        auto put = co_await kv.batch_put(d.windows.back(), values);
        for (auto e : put)
          if (e != errc::success) throw std::runtime_error("put failed: " + std::error_code(e).message());
        d.leases.push_back(co_await kv.batch_query(d.windows.back()));
      }
      std::vector<char> destination(batch * value_size);
      std::vector<asio::mutable_buffer> buffers;
      for (std::size_t i = 0; i < batch; ++i) buffers.push_back(asio::buffer(destination.data() + i * value_size, value_size));
      const std::size_t bytes_per_batch = batch * value_size;

      // The limit: memcpy of the same objects' bytes into the same buffers.
      std::vector<std::vector<const std::byte*>> sources(windows);
      kv.transport().lane<memcpy_lane>().registry().with_segments([&](auto& resolve) {
        for (std::size_t w = 0; w < windows; ++w)
          for (auto& q : d.leases[w]) sources[w].push_back(resolve(q.replicas[0]).data());
      });

      // The modes, measured in turns round by round.
      constexpr std::array<const char*, 4> modes{"memcpy", "query+get", "with-results", "cache"};
      auto step = [&](std::size_t mode, std::uint64_t n) -> asio::awaitable<void> {
        const std::size_t w = n % windows;
        if (mode == 0) {
          for (std::size_t i = 0; i < batch; ++i) std::memcpy(destination.data() + i * value_size, sources[w][i], value_size);
        } else if (mode == 1) {
          const auto q = co_await kv.batch_query(d.windows[w]);
          check(co_await kv.batch_get(d.windows[w], q, buffers));
        } else if (mode == 2) {
          check(co_await kv.batch_get(d.windows[w], d.leases[w], buffers));
        } else {
          check(co_await kv.batch_get(d.windows[w], buffers));
        }
      };
      // One batch of the slowest mode sets how many batches a round runs.
      const auto t0 = bench::bench_clock::now();
      co_await step(1, 0);
      const double one = std::chrono::duration<double, std::micro>(bench::bench_clock::now() - t0).count();
      for (std::size_t w = 0; w < windows; ++w) d.leases[w] = co_await kv.batch_query(d.windows[w]);
      const auto us = co_await bench::interleaved(seconds, modes.size(), bench::reps_for(one, 1000), step);
      // Metadata round trips per batch, counted apart from the timed rounds
      // (reading the counters costs time of its own).
      std::array<double, 4> rts{};
      for (std::size_t mode = 1; mode < modes.size(); ++mode) {
        const auto before = kv.counters().metadata_round_trips;
        for (std::uint64_t n = 0; n < 16; ++n) co_await step(mode, n);
        rts[mode] = static_cast<double>(kv.counters().metadata_round_trips - before) / 16;
      }

      for (std::size_t mode = 0; mode < modes.size(); ++mode) {
        const bench::versus v = bench::compare(us[mode], us[0]);
        const double gib = static_cast<double>(bytes_per_batch) / (v.median_us * 1e-6) / static_cast<double>(1u << 30);
        nlohmann::json row{{"batch", batch},        {"value_bytes", value_size}, {"mode", modes[mode]},
                           {"gib_per_s", gib},      {"us_per_batch", v.median_us}, {"rounds", v.rounds}};
        if (mode == 0) {
          fmt::print("{:>6} {:>7}K {:>13} {:>10.2f} {:>10.1f} {:>9} {:>11} {:>15}\n", batch, value_size >> 10, modes[mode],
                     gib, v.median_us, "", "", "");
        } else {
          fmt::print("{:>6} {:>7}K {:>13} {:>10.2f} {:>10.1f} {:>9.2f} {:>10.0f}% {:>15}\n", batch, value_size >> 10,
                     modes[mode], gib, v.median_us, rts[mode], 100 * v.ratio,
                     fmt::format("({:.0f}% - {:.0f}%)", 100 * v.ratio_p10, 100 * v.ratio_p90));
          row["metadata_round_trips_per_batch"] = rts[mode];
          row["ratio_to_memcpy"] = v.ratio;
          row["ratio_to_memcpy_p10"] = v.ratio_p10;
          row["ratio_to_memcpy_p90"] = v.ratio_p90;
        }
        rows.push_back(std::move(row));
      }
      // The keys stay: their leases hold their memory (the lease contract),
      // so the segment is sized for every configuration at once.
    }
  }
  co_return rows;
}

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args("get_bench", {{"--seconds", "S"}, {"--json", "PATH"}});
  if (!args.parse(argc, argv)) return 2;
  const double seconds = args.number("--seconds", 0.3);
  const std::string json_path = args.text("--json", "");
  asio::io_context io;
  store_options options;
  options.lease_ttl = std::chrono::seconds(30);  // the longest a master grants: leases outlive each measured run
  store kv(io.get_executor(), options);
  auto setup = asio::co_spawn(
      io, [&]() -> asio::awaitable<segment_id> { co_return co_await kv.add_segment(std::uint64_t{1600} << 20); },
      asio::use_future);
  io.run();
  setup.get();
  io.restart();
  auto result = asio::co_spawn(io, run_all(kv, seconds), asio::use_future);
  io.run();
  nlohmann::json rows;
  try {
    rows = result.get();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "get_bench failed: %s\n", e.what());
    return 1;
  }
  bench::write_json(json_path, "get_bench", seconds, rows);
  return 0;
}
