// The disk tier under churn: a small memory segment and a small disk, so
// that demotion, memory release and disk eviction run all the time; a
// writer that writes new keys, as an engine backs up new pages, and now and
// then removes and rewrites recent ones; readers of the recent keys in
// every read form (the
// caller's buffers through the cache, with query results, and into memory
// the store owns, both ways); and a clock that jumps, so that transfers
// finish after their leases while the memory they read is released and
// reused. Every value says whose it is (key, generation, size) and what its
// bytes are: no read may report bytes that are not the key's own.
//
// COROKV_TORTURE_SECONDS sets the length (the suite runs it briefly; the
// long run is recorded in benchmarks/RESULTS.md), and COROKV_TORTURE_SHAPE
// its sizes: "MEMORY_KIB,DISK_KIB,WINDOW,BATCH" (default "192,384,64,4":
// memory for ~24 values, a window of 64 keys read, demotion batches of 4).

#include <corokv/disk_tier.hpp>

#include "support/run.hpp"
#include "support/scratch_dir.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;
using namespace std::chrono_literals;

namespace {

// ------------------------------------------------------------ values
// 24 bytes of header (key hash, generation, size), then bytes derived from
// all three.
constexpr std::size_t value_header_size = 24;

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t key_hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

void fill_value(std::string_view key, std::uint64_t generation, std::span<std::byte> out) {
  const std::uint64_t words[3] = {key_hash(key), generation, out.size()};
  std::memcpy(out.data(), words, value_header_size);
  std::uint64_t seed = splitmix(words[0] ^ splitmix(generation) ^ out.size());
  for (std::size_t i = value_header_size; i < out.size(); i += 8) {
    seed = splitmix(seed);
    std::memcpy(out.data() + i, &seed, std::min<std::size_t>(8, out.size() - i));
  }
}

// Whether `bytes` is a value of `key` (any generation) of exactly its size.
bool is_value_of(std::string_view key, std::span<const std::byte> bytes) {
  if (bytes.size() < value_header_size) return false;
  std::uint64_t words[3];
  std::memcpy(words, bytes.data(), value_header_size);
  if (words[0] != key_hash(key) || words[2] != bytes.size()) return false;
  std::vector<std::byte> expected(bytes.size());
  fill_value(key, words[1], expected);
  return std::equal(bytes.begin(), bytes.end(), expected.begin());
}

// ------------------------------------------------------------ a slow memcpy
// The memcpy lane, made to let other coroutines run before each transfer,
// as a network would: readers, the writer, the demoter and the clock
// interleave inside each other's transfers.
class yielding_memcpy_lane {
 public:
  explicit yielding_memcpy_lane(std::shared_ptr<std::mt19937_64> rng) : rng_(std::move(rng)) {}

  std::string_view name() const noexcept { return inner_.name(); }
  lane_rank rank(const segment_route& where) { return inner_.rank(where); }
  asio::awaitable<std::error_code> read(std::span<const read_request> reads, std::span<errc> status) {
    co_await yield_a_while();
    co_return co_await inner_.read(reads, status);
  }
  asio::awaitable<std::error_code> write(std::span<const write_request> writes, std::span<errc> status) {
    co_await yield_a_while();
    co_return co_await inner_.write(writes, status);
  }
  std::error_code publish(const published_segment& segment, segment_endpoints& where) {
    return inner_.publish(segment, where);
  }
  void withdraw(segment_id id) { inner_.withdraw(id); }

 private:
  asio::awaitable<void> yield_a_while() {
    auto ex = co_await asio::this_coro::executor;
    for (auto n = (*rng_)() % 6; n > 0; --n) co_await asio::post(ex, asio::use_awaitable);
  }

  memcpy_lane inner_;
  std::shared_ptr<std::mt19937_64> rng_;
};
static_assert(lane<yielding_memcpy_lane>);
static_assert(publishing_lane<yielding_memcpy_lane>);

using torture_transport = lane_router<yielding_memcpy_lane, disk_lane>;
using torture_store = basic_store<embedded_metadata, torture_transport>;

// ------------------------------------------------------------ the run
struct tally {
  std::uint64_t batches = 0, good = 0, missing = 0, expired = 0, other = 0, wrong = 0, failed_batches = 0;
};

// The sizes of a run.
struct torture_shape {
  std::uint64_t memory = 192 << 10;
  std::uint64_t disk = 384 << 10;
  std::size_t window = 64;  // readers read among the newest keys
  std::size_t batch = 4;    // objects per demotion pass: a small part of memory, as in a real tier
};

struct torture {
  static constexpr std::size_t max_value = 12 * 1024;
  const torture_shape shape;
  const std::size_t window = shape.window;

  std::filesystem::path dir;
  asio::io_context io;
  meta::manual_clock clock;
  std::shared_ptr<std::mt19937_64> rng = std::make_shared<std::mt19937_64>(20261207);
  std::shared_ptr<meta::service> service;
  torture_store store;
  std::unique_ptr<disk_tier<torture_store>> tier;
  std::size_t written = 0;  // keys key-0 .. key-(written - 1) were written
  std::map<std::size_t, std::uint64_t> rewrites;  // generations above 1, of keys in the window
  clock_type::time_point deadline;
  std::array<tally, 4> by_form{};  // cache, query results, owned via cache, owned with query results
  std::uint64_t writes = 0, removes = 0, passes = 0, jumps = 0;

  static meta::service_options service_options() {
    meta::service_options o;
    o.shards = 4;
    o.lease_ttl = 5s;
    o.node_ttl = 24h;
    o.demote_watermark = 0.4;
    o.high_watermark = 0.9;
    o.low_watermark = 0.6;
    o.disk_high_watermark = 0.9;
    o.disk_low_watermark = 0.7;
    o.id_seed = 1000;
    return o;
  }

  torture(std::filesystem::path d, torture_shape s)
      : shape(s),
        dir(std::move(d)),
        service(std::make_shared<meta::service>(service_options(), clock.source())),
        store(io.get_executor(), embedded_metadata(service),
              torture_transport(router_options{}, yielding_memcpy_lane(rng), disk_lane(io.get_executor())),
              store_options{.lease_ttl = 5s, .lease_margin = 100ms, .buffer_pool_size = 4u << 20,
                            .clock = clock.source()}) {}

  template <class T>
  T await(asio::awaitable<T> task) {
    return test::run_to_completion(io, std::move(task));
  }

  bool running() const { return clock_type::now() < deadline; }
  std::size_t pick(std::size_t n) { return static_cast<std::size_t>((*rng)() % n); }
  asio::awaitable<void> pause(std::size_t most) {
    for (auto n = pick(most + 1); n > 0; --n) co_await asio::post(io, asio::use_awaitable);
  }

  std::size_t first_recent() const { return written > window ? written - window : 0; }
  // Up to n distinct keys among the newest `window` (as indices).
  std::vector<std::size_t> recent(std::size_t n) {
    const std::size_t first = first_recent();
    std::vector<std::size_t> out;
    for (std::size_t tries = 0; out.size() < std::min(n, written - first) && tries < 8 * n; ++tries) {
      const std::size_t i = first + pick(written - first);
      if (std::find(out.begin(), out.end(), i) == out.end()) out.push_back(i);
    }
    return out;
  }
  static std::string name(std::size_t i) { return "key-" + std::to_string(i); }
  static std::vector<std::string> names(const std::vector<std::size_t>& indices) {
    std::vector<std::string> out;
    for (std::size_t i : indices) out.push_back(name(i));
    return out;
  }

  // Writes four new keys; one time in eight, first removes a few recent
  // keys and writes them again, a generation on.
  asio::awaitable<void> writer() {
    while (running()) {
      std::vector<std::size_t> batch;
      if (written >= window && pick(8) == 0) {
        batch = recent(3);
        const auto gone = names(batch);
        auto removed = co_await store.batch_remove(gone, asio::use_awaitable);
        removes += std::count(removed.begin(), removed.end(), errc::success);
      }
      std::vector<std::uint64_t> generations;
      for (std::size_t i : batch) generations.push_back(++rewrites.try_emplace(i, 1).first->second);
      for (int n = 0; n < 4; ++n) {
        batch.push_back(written++);
        generations.push_back(1);
      }
      rewrites.erase(rewrites.begin(), rewrites.lower_bound(first_recent()));
      const auto batch_keys = names(batch);
      std::vector<std::vector<std::byte>> values;
      std::vector<asio::const_buffer> buffers;
      for (std::size_t k = 0; k < batch.size(); ++k) {
        values.emplace_back(4096 * (1 + pick(3)));
        fill_value(batch_keys[k], generations[k], values.back());
        buffers.emplace_back(values.back().data(), values.back().size());
      }
      auto put = co_await store.batch_put(batch_keys, buffers, asio::use_awaitable);
      writes += std::count(put.begin(), put.end(), errc::success);
      co_await pause(8);
    }
  }

  asio::awaitable<void> demoter() {
    while (running()) {
      auto [ec, n] = co_await tier->demote();
      CHECK_FALSE(ec);
      ++passes;
      co_await pause(8);
    }
  }

  // Time runs on, mostly in small steps, now and then past a whole lease.
  asio::awaitable<void> jumper() {
    while (running()) {
      co_await pause(12);
      clock.advance(pick(10) == 0 ? 6s : std::chrono::milliseconds(pick(1500)));
      ++jumps;
    }
  }

  void check(tally& t, const std::string& key, const get_result& r, std::span<const std::byte> bytes) {
    if (r.ok()) {
      const bool mine = r.size == bytes.size() && is_value_of(key, bytes);
      ++(mine ? t.good : t.wrong);
    } else if (r.status == errc::not_found) {
      ++t.missing;
    } else if (r.status == errc::lease_expired) {
      ++t.expired;
    } else {
      ++t.other;
    }
  }

  // One reader per form.
  asio::awaitable<void> reader(int form) {
    tally& t = by_form[static_cast<std::size_t>(form)];
    std::vector<std::vector<std::byte>> memory(8, std::vector<std::byte>(max_value));
    std::vector<asio::mutable_buffer> buffers;
    for (auto& m : memory) buffers.emplace_back(m.data(), m.size());
    while (running()) {
      const auto batch = names(recent(1 + pick(8)));
      if (batch.empty()) {
        co_await pause(1);
        continue;
      }
      const std::span<const asio::mutable_buffer> dst(buffers.data(), batch.size());
      ++t.batches;
      std::vector<query_result> leases;
      if (form == 1 || form == 3) {
        auto [qec, q] = co_await store.batch_query(batch, asio::as_tuple(asio::use_awaitable));
        if (qec) {
          ++t.failed_batches;
          continue;
        }
        leases = std::move(q);
        co_await pause(6);  // the lease may run out before the read starts, or while it runs
      }
      if (form <= 1) {
        std::tuple<boost::system::error_code, std::vector<get_result>> outcome;
        if (form == 0)
          outcome = co_await store.batch_get(batch, dst, asio::as_tuple(asio::use_awaitable));
        else
          outcome = co_await store.batch_get(batch, leases, dst, asio::as_tuple(asio::use_awaitable));
        auto& [ec, got] = outcome;
        if (ec) {
          ++t.failed_batches;
          continue;
        }
        for (std::size_t i = 0; i < batch.size(); ++i)
          check(t, batch[i], got[i], std::span<const std::byte>(memory[i].data(), got[i].ok() ? got[i].size : 0));
      } else {
        std::tuple<boost::system::error_code, std::vector<get_buffer_result>> outcome;
        if (form == 2)
          outcome = co_await store.batch_get(batch, asio::as_tuple(asio::use_awaitable));
        else
          outcome = co_await store.batch_get(batch, leases, asio::as_tuple(asio::use_awaitable));
        auto& [ec, got] = outcome;
        if (ec) {
          ++t.failed_batches;
          continue;
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
          const std::span<const std::byte> bytes = got[i].buffer.bytes();
          check(t, batch[i], get_result{got[i].status, bytes.size(), got[i].version, got[i].source}, bytes);
        }
      }
    }
  }

  void run(std::chrono::seconds length) {
    REQUIRE(await(store.add_segment(shape.memory, asio::use_awaitable)) != 0);
    disk_tier_options tier_options{dir / "tier", shape.disk};
    tier_options.batch_objects = shape.batch;
    auto [ec, t] = await(disk_tier<torture_store>::open(store, tier_options));
    REQUIRE_FALSE(ec);
    tier = std::move(t);
    deadline = clock_type::now() + length;
    auto spawn = [&](asio::awaitable<void> a) {
      asio::co_spawn(io, std::move(a), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    };
    spawn(writer());
    spawn(demoter());
    spawn(jumper());
    for (int form = 0; form < 4; ++form) spawn(reader(form));
    io.restart();
    io.run();
  }
};

torture_shape torture_sizes() {
  torture_shape s;
  if (const char* e = std::getenv("COROKV_TORTURE_SHAPE")) {
    unsigned long memory_kib = 0, disk_kib = 0, window = 0, batch = 0;
    REQUIRE_MESSAGE(std::sscanf(e, "%lu,%lu,%lu,%lu", &memory_kib, &disk_kib, &window, &batch) == 4,
                    "COROKV_TORTURE_SHAPE is MEMORY_KIB,DISK_KIB,WINDOW,BATCH");
    REQUIRE((memory_kib >= 64 && disk_kib >= 64 && window >= 8 && batch >= 1));
    s = {memory_kib << 10, disk_kib << 10, window, batch};
  }
  return s;
}

std::chrono::seconds torture_length() {
  const char* s = std::getenv("COROKV_TORTURE_SECONDS");
  return std::chrono::seconds(s ? std::max(1, std::atoi(s)) : 4);
}

}  // namespace

TEST_SUITE("disk") {

TEST_CASE("disk tier torture: demotion, release and disk eviction churn under late reads, and no read is ever another's bytes") {
  test::scratch_dir dir(test::disk_backed_tmp);
  const torture_shape shape = torture_sizes();
  torture t(dir.path, shape);
  t.run(torture_length());

  tally all;
  for (const tally& f : t.by_form) {
    all.batches += f.batches;
    all.good += f.good;
    all.missing += f.missing;
    all.expired += f.expired;
    all.other += f.other;
    all.wrong += f.wrong;
    all.failed_batches += f.failed_batches;
  }
  const auto st = t.service->stats();
  const auto tier = t.tier->stats();
  const auto c = t.store.counters();
  const double refused_share =
      tier.demoted + tier.refused == 0 ? 0.0 : static_cast<double>(tier.refused) / static_cast<double>(tier.demoted + tier.refused);
  MESSAGE("torture (" << (shape.memory >> 10) << " KiB memory, " << (shape.disk >> 10) << " KiB disk, window "
                      << shape.window << ", batch " << shape.batch << "): " << all.batches << " read batches, " << all.good << " good, " << all.missing << " not found, "
                      << all.expired << " lease_expired, " << all.other << " other, " << all.wrong << " WRONG; "
                      << t.writes << " writes, " << t.removes << " removes, " << t.jumps << " clock jumps; "
                      << c.keys_revalidated << " late reads re-validated, " << c.lease_expiries << " failed; "
                      << tier.demoted << " demoted, " << tier.refused << " refused (" << refused_share * 100
                      << "%; " << st.demotions_dropped_total << " dropped while being copied), "
                      << st.memory_released_total << " memory releases, " << st.disk_evicted_total
                      << " disk evictions, " << st.evicted_total << " dropped from memory");

  CHECK(all.wrong == 0);  // the point of it all
  CHECK(all.failed_batches == 0);
  CHECK(all.other == 0);
  for (const tally& f : t.by_form) CHECK(f.good > 0);  // every form read real values
  // The run did what it is for: churn in every tier, and late reads.
  CHECK(t.writes > 0);
  CHECK(tier.demoted > 0);
  CHECK(st.memory_released_total > 0);
  CHECK(st.disk_evicted_total > 0);
  CHECK(c.keys_revalidated > 0);
  CHECK(c.lease_expiries > 0);
  const auto err = t.service->check_invariants();
  CHECK_MESSAGE(err.empty(), err);
}

}  // TEST_SUITE
