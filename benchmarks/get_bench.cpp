// batch_get latency and throughput on the embedded store, against memcpy of
// the same bytes (from the same segment memory into the same destination
// buffers) measured in the same run.
//
// Modes, per batch size (1, 16, 64, 256) and value size (4 KiB, 64 KiB, 1 MiB):
//   query+get    batch_query then batch_get with its results (1 round trip)
//   with-results batch_get with query results the caller already holds (0)
//   cache        batch_get through the store's metadata cache (0 once warm)
// Each batch reads a different window of a key set four batches large, so
// memcpy and the store see the same cache behaviour.
//
//   get_bench [--seconds S] [--json PATH]

#include <corokv/embedded.hpp>

#include "bench_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;
using bench::timed;

namespace {

struct measurement {
  double gib_per_s = 0;
  double us_per_batch = 0;
  double round_trips_per_batch = 0;
};

struct dataset {
  std::vector<std::string> keys;
  std::vector<std::vector<std::string_view>> windows;  // one batch's keys each
  std::vector<std::vector<query_result>> leases;       // per window, refreshed per run
};

measurement summarize(std::uint64_t rounds, double elapsed, std::size_t bytes_per_batch, std::uint64_t trips) {
  return {bench::gib_per_s(rounds * bytes_per_batch, elapsed), elapsed * 1e6 / static_cast<double>(rounds),
          static_cast<double>(trips) / static_cast<double>(rounds)};
}

void check(const std::vector<get_result>& got) {
  for (auto& r : got)
    if (!r.ok()) throw std::runtime_error("batch_get failed: " + r.ec().message());
}

asio::awaitable<nlohmann::json> run_all(store& kv, double seconds) {
  nlohmann::json rows = nlohmann::json::array();
  fmt::print("{:>6} {:>8} {:>13} {:>10} {:>10} {:>9} {:>11}  {}\n", "batch", "value", "mode", "GiB/s", "µs/batch",
             "RTs/batch", "vs memcpy", "memcpy GiB/s");
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
      auto [memcpy_rounds, memcpy_elapsed] = co_await timed(seconds, [&](std::uint64_t round) -> asio::awaitable<void> {
        const auto& src = sources[round % windows];
        for (std::size_t i = 0; i < batch; ++i) std::memcpy(destination.data() + i * value_size, src[i], value_size);
        co_return;
      });
      const measurement limit = summarize(memcpy_rounds, memcpy_elapsed, bytes_per_batch, 0);

      auto run_mode = [&](const char* mode, auto step) -> asio::awaitable<void> {
        const auto before = kv.counters().metadata_round_trips;
        auto [rounds, elapsed] = co_await timed(seconds, step);
        const measurement m = summarize(rounds, elapsed, bytes_per_batch, kv.counters().metadata_round_trips - before);
        fmt::print("{:>6} {:>7}K {:>13} {:>10.2f} {:>10.1f} {:>9.2f} {:>10.0f}%  {:.2f}\n", batch, value_size >> 10, mode,
                   m.gib_per_s, m.us_per_batch, m.round_trips_per_batch, 100.0 * m.gib_per_s / limit.gib_per_s,
                   limit.gib_per_s);
        rows.push_back({{"batch", batch},
                        {"value_bytes", value_size},
                        {"mode", mode},
                        {"gib_per_s", m.gib_per_s},
                        {"us_per_batch", m.us_per_batch},
                        {"metadata_round_trips_per_batch", m.round_trips_per_batch},
                        {"memcpy_gib_per_s", limit.gib_per_s},
                        {"ratio_to_memcpy", m.gib_per_s / limit.gib_per_s}});
      };

      co_await run_mode("query+get", [&](std::uint64_t round) -> asio::awaitable<void> {
        const auto& keys = d.windows[round % windows];
        const auto q = co_await kv.batch_query(keys);
        check(co_await kv.batch_get(keys, q, buffers));
      });
      for (std::size_t w = 0; w < windows; ++w) d.leases[w] = co_await kv.batch_query(d.windows[w]);
      co_await run_mode("with-results", [&](std::uint64_t round) -> asio::awaitable<void> {
        const auto& keys = d.windows[round % windows];
        check(co_await kv.batch_get(keys, d.leases[round % windows], buffers));
      });
      co_await run_mode("cache", [&](std::uint64_t round) -> asio::awaitable<void> {
        check(co_await kv.batch_get(d.windows[round % windows], buffers));
      });
      rows.push_back({{"batch", batch}, {"value_bytes", value_size}, {"mode", "memcpy"},
                      {"gib_per_s", limit.gib_per_s}, {"us_per_batch", limit.us_per_batch}});

      // The keys stay: their leases hold their memory (the lease contract),
      // so the segment is sized for every configuration at once.
    }
  }
  co_return rows;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0.3;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seconds") seconds = std::stod(argv[i + 1]);
    else if (flag == "--json") json_path = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: get_bench [--seconds S] [--json PATH]\n");
      return 2;
    }
  }
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
