// corokv quickstart: the embedded store, in one process.
//
// A serving engine's view: contribute memory, put a prompt's KV blocks in one
// batch, find how much of a longer prompt is cached, query those blocks (one
// metadata round trip, leases granted), then read them with the query results
// (no round trip), again through the metadata cache, and once more into
// memory the store owns (a handle per key, no buffers to size or register).
// Every figure in the table comes from the store's own counters, measured
// around each call, and every byte read is compared with what was written.

#include <corokv/embedded.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;

namespace {

constexpr std::size_t block_count = 32;
constexpr std::size_t block_size = 64 << 10;  // a KV block: 64 KiB

struct step_report {
  std::string step;
  std::size_t keys = 0;
  std::size_t ok = 0;
  std::string served;
  store_counters delta;
  std::chrono::nanoseconds wall{0};
};

store_counters operator-(const store_counters& a, const store_counters& b) {
  store_counters d;
  d.batches = a.batches - b.batches;
  d.metadata_round_trips = a.metadata_round_trips - b.metadata_round_trips;
  d.keys_from_caller = a.keys_from_caller - b.keys_from_caller;
  d.keys_from_cache = a.keys_from_cache - b.keys_from_cache;
  d.keys_requeried = a.keys_requeried - b.keys_requeried;
  d.bytes_read = a.bytes_read - b.bytes_read;
  d.bytes_written = a.bytes_written - b.bytes_written;
  d.metadata_time = a.metadata_time - b.metadata_time;
  d.data_time = a.data_time - b.data_time;
  return d;
}

std::string bytes(std::uint64_t n) {
  if (n == 0) return "-";
  if (n >= (1u << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(n) / (1 << 20));
  return fmt::format("{:.1f} KiB", static_cast<double>(n) / 1024);
}

double micros(std::chrono::nanoseconds t) { return static_cast<double>(t.count()) / 1000.0; }

// The engine's work, as one coroutine. Returns the table, or throws.
asio::awaitable<std::vector<step_report>> serve(store& kv) {
  std::vector<step_report> table;
  // Measures one call: counters and wall time before and after.
  auto measured = [&](std::string step, std::size_t keys, auto&& count_ok, std::string served = {}) {
    return [&kv, &table, step = std::move(step), keys, count_ok, served = std::move(served),
            before = kv.counters(), started = std::chrono::steady_clock::now()](const auto& result) mutable {
      table.push_back({std::move(step), keys, count_ok(result), std::move(served), kv.counters() - before,
                       std::chrono::steady_clock::now() - started});
    };
  };
  auto count_errc = [](const std::vector<errc>& r) {
    return static_cast<std::size_t>(std::count(r.begin(), r.end(), errc::success));
  };
  auto count_get = [](const std::vector<get_result>& r) {
    return static_cast<std::size_t>(std::count_if(r.begin(), r.end(), [](auto& g) { return g.ok(); }));
  };

  auto record_segment = measured("add_segment (256 MiB)", 0, [](segment_id) { return std::size_t{0}; });
  const segment_id segment = co_await kv.add_segment(256 << 20);
  record_segment(segment);

  // A prompt's KV cache: block i of prompt 42, filled with recognisable bytes.
  std::vector<std::string> keys, values;
  for (std::size_t i = 0; i < block_count; ++i) {
    keys.push_back(fmt::format("prompt-42/block-{:03}", i));
    values.push_back(std::string(block_size, static_cast<char>('A' + i % 26)));
  }
  std::vector<asio::const_buffer> value_buffers;
  for (auto& v : values) value_buffers.push_back(asio::buffer(v));

  auto record_put = measured("batch_put", keys.size(), count_errc);
  const auto put = co_await kv.batch_put(keys, value_buffers);
  record_put(put);

  // How much of a longer prompt (the same 32 blocks and 8 more) is cached?
  std::vector<std::string> longer = keys;
  for (std::size_t i = block_count; i < block_count + 8; ++i) longer.push_back(fmt::format("prompt-42/block-{:03}", i));
  auto record_prefix = measured("batch_exist_prefix", longer.size(), [](prefix_result p) { return p.matched; });
  const prefix_result prefix = co_await kv.batch_exist_prefix(longer);
  record_prefix(prefix);

  // Step one of the two-step read: one round trip, leases granted.
  auto record_query = measured("batch_query", prefix.matched, [](const std::vector<query_result>& q) {
    return static_cast<std::size_t>(std::count_if(q.begin(), q.end(), [](auto& r) { return r.ok(); }));
  });
  std::vector<std::string> cached(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(prefix.matched));
  const auto query = co_await kv.batch_query(cached);
  record_query(query);

  // Step two: straight into the engine's buffers, no metadata round trip.
  std::vector<std::string> out(cached.size(), std::string(block_size, '\0'));
  std::vector<asio::mutable_buffer> out_buffers;
  for (auto& o : out) out_buffers.push_back(asio::buffer(o));
  auto record_get = measured("batch_get (query results)", cached.size(), count_get, "caller");
  const auto got = co_await kv.batch_get(cached, query, out_buffers);
  record_get(got);
  for (std::size_t i = 0; i < cached.size(); ++i)
    if (!got[i].ok() || out[i] != values[i]) throw std::runtime_error("read back wrong bytes for " + cached[i]);

  // Again without query results: the store's metadata cache serves them.
  for (auto& o : out) std::memset(o.data(), 0, o.size());
  auto record_cached = measured("batch_get (cache)", cached.size(), count_get, "cache");
  const auto again = co_await kv.batch_get(cached, out_buffers);
  record_cached(again);
  for (std::size_t i = 0; i < cached.size(); ++i)
    if (!again[i].ok() || again[i].source != key_source::cache || out[i] != values[i])
      throw std::runtime_error("cached read of " + cached[i] + " went wrong");

  // Into the store's own memory: each key's bytes in a handle that owns
  // them (returned to the store's buffer pool when the handle goes).
  auto record_owned = measured("batch_get (store-owned)", cached.size(), [](const std::vector<get_buffer_result>& r) {
    return static_cast<std::size_t>(std::count_if(r.begin(), r.end(), [](auto& g) { return g.ok(); }));
  }, "caller");
  const auto owned = co_await kv.batch_get(cached, query);
  record_owned(owned);
  for (std::size_t i = 0; i < cached.size(); ++i)
    if (!owned[i].ok() || std::memcmp(owned[i].buffer.data(), values[i].data(), values[i].size()) != 0)
      throw std::runtime_error("store-owned read of " + cached[i] + " went wrong");

  co_return table;
}

}  // namespace

int main() {
  asio::io_context io;
  store_options options;
  options.populate_buffer_pool = true;  // fault the pool's pages in now, not on the first store-owned read
  store kv(io.get_executor(), options);
  auto future = asio::co_spawn(io, serve(kv), asio::use_future);
  io.run();
  std::vector<step_report> table;
  try {
    table = future.get();
  } catch (const std::exception& e) {
    fmt::print(stderr, "quickstart failed: {}\n", e.what());
    return 1;
  }

  fmt::print("corokv quickstart: the embedded store (metadata service, memory and data in this process)\n\n");
  fmt::print("{:<26} {:>5} {:>5} {:>9} {:>12} {:>13} {:>10} {:>9}\n", "step", "keys", "ok", "meta RTs", "bytes moved",
             "metadata µs", "data µs", "wall µs");
  for (const auto& r : table) {
    const std::uint64_t moved = r.delta.bytes_read + r.delta.bytes_written;
    fmt::print("{:<26} {:>5} {:>5} {:>9} {:>12} {:>13.1f} {:>10.1f} {:>9.1f}\n", r.step, r.keys, r.ok,
               r.delta.metadata_round_trips, bytes(moved), micros(r.delta.metadata_time), micros(r.delta.data_time),
               micros(r.wall));
  }
  const store_counters total = kv.counters();
  fmt::print("\nread with caller query results: {} keys, from the cache: {} keys, re-queried: {} keys\n",
             total.keys_from_caller, total.keys_from_cache, total.keys_requeried);
  for (const lane_counters& lane : total.lanes)
    fmt::print("lane {}: {} batches, {} ranges, {} read, {} written, {} failed\n", lane.name, lane.batches,
               lane.requests, bytes(lane.bytes_read), bytes(lane.bytes_written), lane.failures);
  fmt::print("every byte read matched what was written\n\ncounters as JSON:\n{}\n", kv.counters_json().dump(2));
  return 0;
}
