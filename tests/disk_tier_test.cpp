// The disk tier of an embedded store, end to end: demotion under memory
// pressure keeps every object readable with its exact bytes (served from
// disk once eviction released its memory), leases hold on disk extents, and
// a full disk drops its oldest objects cleanly.

#include <corokv/disk_tier.hpp>

#include "support/run.hpp"
#include "support/scratch_dir.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <algorithm>
#include <fcntl.h>
#include <unistd.h>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;
using namespace std::chrono_literals;

namespace {

std::vector<std::byte> value_of(std::size_t i, std::size_t n) {
  std::mt19937_64 rng(i * 7919 + 1);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// An embedded store with a small memory tier and a disk tier.
struct tiered {
  asio::io_context io;
  std::shared_ptr<meta::service> service;
  embedded_disk_store store;
  std::unique_ptr<disk_tier<embedded_disk_store>> tier;

  static meta::service_options service_options() {
    meta::service_options o;
    o.demote_watermark = 0.3;
    o.high_watermark = 0.9;
    o.low_watermark = 0.6;
    o.lease_ttl = 2s;
    return o;
  }

  tiered(const std::filesystem::path& file, std::uint64_t memory, std::uint64_t disk,
         meta::service_options o = service_options())
      : service(std::make_shared<meta::service>(o)),
        store(io.get_executor(), embedded_metadata(service),
              embedded_disk_transport(router_options{}, memcpy_lane(), disk_lane(io.get_executor())),
              store_options{.buffer_pool_size = 0}) {
    REQUIRE(test::run_to_completion(io, store.add_segment(memory, asio::use_awaitable)) != 0);
    auto [ec, t] = test::run_to_completion(io, disk_tier<embedded_disk_store>::open(store, {file, disk}));
    REQUIRE_FALSE(ec);
    tier = std::move(t);
  }

  std::vector<std::string> keys(std::size_t from, std::size_t n) {
    std::vector<std::string> k;
    for (std::size_t i = from; i < from + n; ++i) k.push_back("block-" + std::to_string(i));
    return k;
  }

  void put(std::size_t from, std::size_t n, std::size_t size) {
    std::vector<std::vector<std::byte>> values;
    std::vector<asio::const_buffer> buffers;
    for (std::size_t i = from; i < from + n; ++i) values.push_back(value_of(i, size));
    for (auto& v : values) buffers.emplace_back(v.data(), v.size());
    const auto k = keys(from, n);
    auto st = test::run_to_completion(io, store.batch_put(k, buffers, asio::use_awaitable));
    for (auto s : st) REQUIRE(s == errc::success);
  }

  // Reads keys [from, from + n) and counts exact, wrong and missing ones.
  struct tally {
    std::size_t exact = 0, wrong = 0, missing = 0;
  };
  tally read(std::size_t from, std::size_t n, std::size_t size) {
    std::vector<std::vector<std::byte>> out(n, std::vector<std::byte>(size));
    std::vector<asio::mutable_buffer> buffers;
    for (auto& o : out) buffers.emplace_back(o.data(), o.size());
    const auto k = keys(from, n);
    auto got = test::run_to_completion(io, store.batch_get(k, buffers, asio::use_awaitable));
    tally t;
    for (std::size_t i = 0; i < n; ++i) {
      if (!got[i].ok()) {
        ++t.missing;
        continue;
      }
      (out[i] == value_of(from + i, size) ? t.exact : t.wrong) += 1;
    }
    return t;
  }

  // Keys [0, total) in batches of `batch`, with demotion passes after each
  // (as run() would do between them).
  void put_demoting(std::size_t total, std::size_t batch, std::size_t size) {
    for (std::size_t from = 0; from < total; from += batch) {
      put(from, batch, size);
      demote_all();
    }
  }

  std::size_t demote_all() {
    std::size_t total = 0;
    for (;;) {
      auto [ec, n] = test::run_to_completion(io, tier->demote());
      REQUIRE_FALSE(ec);
      if (n == 0) return total;
      total += n;
    }
  }

  std::uint64_t disk_lane_bytes_read() const {
    for (auto& l : store.counters().lanes)
      if (l.name == "disk") return l.bytes_read;
    return 0;
  }
};

}  // namespace

TEST_SUITE("disk") {

TEST_CASE("disk tier: under memory pressure every object is demoted, not dropped, and read back exact from disk") {
  test::scratch_dir s(test::disk_backed_tmp);
  constexpr std::size_t size = 64 * 1024, batch = 4, total = 64;  // 4 MiB through 1 MiB of memory
  tiered t(s.path / "tier", 1 << 20, 16 << 20);
  CHECK(t.tier->file().direct());
  t.put_demoting(total, batch, size);
  const auto st = t.service->stats();
  CHECK(st.evicted_total == 0);  // nothing dropped
  CHECK(st.disk_only_objects > 0);
  CHECK(st.memory_released_total == st.disk_only_objects);
  CHECK(t.tier->stats().demoted > 0);
  CHECK(t.tier->stats().failed_copies == 0);
  const auto before = t.disk_lane_bytes_read();
  const auto r = t.read(0, total, size);
  CHECK(r.exact == total);
  CHECK(r.wrong == 0);
  CHECK(r.missing == 0);
  CHECK(t.disk_lane_bytes_read() - before >= st.disk_only_objects * size);  // served from disk
  CHECK(t.service->check_invariants().empty());
}

TEST_CASE("disk tier: a lease holds a disk extent: a full disk drops only objects nobody leases") {
  test::scratch_dir s(test::disk_backed_tmp);
  constexpr std::size_t size = 64 * 1024;
  auto o = tiered::service_options();
  o.lease_ttl = 30s;
  // Upkeep never evicts the full disk by its watermark here (it would drop
  // the unleased disk-only objects before the test leases them); only a
  // demotion that needs room tries to, which is the case under test.
  o.disk_high_watermark = 1.0;
  o.disk_low_watermark = 1.0;
  tiered t(s.path / "tier", 1 << 20, 1 << 20, o);  // 16 objects fit on disk
  t.put(0, 8, size);
  t.demote_all();
  t.put(8, 8, size);
  t.demote_all();
  REQUIRE(t.service->stats().disk.used == 16 * size);  // the disk is full
  // Lease all sixteen (queries through the store).
  const auto k = t.keys(0, 16);
  auto q = test::run_to_completion(t.io, t.store.batch_query(k, asio::use_awaitable));
  for (auto& r : q) REQUIRE(r.ok());
  // More puts (what leased memory leaves room for): demotion wants disk
  // room, but every disk object is leased, so none is dropped.
  t.put(16, 4, size);
  CHECK(t.demote_all() == 0);
  CHECK(t.service->stats().disk_evicted_total == 0);
  CHECK(t.service->stats().disk_only_objects > 0);
  // Reads with the leased query results get exact bytes, disk or memory.
  std::vector<std::vector<std::byte>> out(k.size(), std::vector<std::byte>(size));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& b : out) buffers.emplace_back(b.data(), b.size());
  auto got = test::run_to_completion(t.io, t.store.batch_get(k, q, buffers, asio::use_awaitable));
  for (std::size_t i = 0; i < k.size(); ++i) {
    REQUIRE(got[i].ok());
    CHECK(out[i] == value_of(i, size));
  }
  // The disk-only ones are gone from memory: those bytes came from disk.
  CHECK(t.disk_lane_bytes_read() >= t.service->stats().disk_only_objects * size);
  CHECK(t.service->check_invariants().empty());
}

TEST_CASE("disk tier: after a restart every copy is found again, a corrupted one is dropped, a removed one stays gone") {
  test::scratch_dir s(test::disk_backed_tmp);
  constexpr std::size_t size = 64 * 1024, total = 24;
  const auto file = s.path / "tier";
  std::vector<std::size_t> on_disk;  // keys with a disk copy before the restart
  std::uint64_t corrupt_offset = 0;
  std::size_t corrupted = total, removed = total;
  {
    tiered t(file, 1 << 20, 8 << 20);
    t.put_demoting(total, 4, size);
    const auto k = t.keys(0, total);
    auto q = test::run_to_completion(t.io, t.store.batch_query(k, asio::use_awaitable));
    for (std::size_t i = 0; i < total; ++i)
      for (auto& r : q[i].replicas)
        if (r.segment == t.tier->segment()) on_disk.push_back(i);
    REQUIRE(on_disk.size() >= 8);
    // One copy's bytes will be flipped on the file; another key is removed
    // (its copy released: the next pass writes that down).
    corrupted = on_disk[1];
    for (auto& r : q[corrupted].replicas)
      if (r.segment == t.tier->segment()) corrupt_offset = r.offset;
    removed = on_disk[2];
    const std::vector<std::string> gone{k[removed]};
    auto st = test::run_to_completion(t.io, t.store.batch_remove(gone, asio::use_awaitable));
    REQUIRE(st[0] == errc::success);
    t.demote_all();
    CHECK(t.tier->stats().released >= 1);
  }  // the store leaves; its objects go with the service
  {
    const int fd = ::open(file.c_str(), O_RDWR);
    std::byte b{};
    REQUIRE(::pread(fd, &b, 1, static_cast<off_t>(corrupt_offset + 100)) == 1);
    b ^= std::byte{0x20};
    REQUIRE(::pwrite(fd, &b, 1, static_cast<off_t>(corrupt_offset + 100)) == 1);
    ::close(fd);
  }
  // A fresh service, as after a restart of everything.
  tiered t(file, 1 << 20, 8 << 20);
  const auto st = t.tier->stats();
  CHECK(st.found == on_disk.size() - 1);  // the removed one is forgotten
  CHECK(st.corrupt == 1);
  CHECK(st.adopted == on_disk.size() - 2);
  CHECK_FALSE(st.index_torn);
  for (std::size_t i = 0; i < total; ++i) {
    const auto r = t.read(i, 1, size);
    const bool expected = std::find(on_disk.begin(), on_disk.end(), i) != on_disk.end() && i != corrupted && i != removed;
    CHECK_MESSAGE(r.exact == (expected ? 1u : 0u), i);
    CHECK(r.wrong == 0);
  }
  CHECK(t.service->check_invariants().empty());
}

TEST_CASE("disk tier: a disk mounted again while the process lives on offers its copies again: the unchanged come back, the rest stay gone, also after a restart") {
  test::scratch_dir s(test::disk_backed_tmp);
  constexpr std::size_t size = 64 * 1024, total = 24;
  const auto file = s.path / "tier";
  std::vector<std::size_t> disk_only;  // keys whose only copy is on disk
  std::size_t removed = total, rewritten = total;
  {
    tiered t(file, 1 << 20, 8 << 20);
    t.put_demoting(total, 4, size);
    const auto k = t.keys(0, total);
    auto q = test::run_to_completion(t.io, t.store.batch_query(k, asio::use_awaitable));
    for (std::size_t i = 0; i < total; ++i)
      if (q[i].replicas.size() == 1 && q[i].replicas[0].segment == t.tier->segment()) disk_only.push_back(i);
    REQUIRE(disk_only.size() >= 6);
    // The service drops the disk (as when its node is declared dead) ...
    const segment_id disk = t.tier->segment();
    const auto descriptor = t.service->segment(disk);
    REQUIRE(descriptor);
    REQUIRE(t.service->unmount_segment(disk) == errc::success);
    CHECK(t.service->stats().disk_only_objects == 0);
    // ... one of its keys is removed meanwhile and another written anew ...
    removed = disk_only[1];
    rewritten = disk_only[2];
    const std::vector<std::string> gone{k[removed]};
    (void)test::run_to_completion(t.io, t.store.batch_remove(gone, asio::use_awaitable));
    {
      const auto fresh = value_of(1000, size);
      const std::vector<std::string> again{k[rewritten]};
      const std::vector<asio::const_buffer> b{asio::buffer(fresh)};
      auto st = test::run_to_completion(t.io, t.store.batch_put(again, b, asio::use_awaitable));
      REQUIRE(st[0] == errc::success);
    }
    // ... and the node's connection mounts it again under its id.
    const auto back = t.service->mount_segment(t.store.node(), descriptor->size, descriptor->endpoints, disk,
                                               /*remount=*/true, storage_tier::disk);
    REQUIRE(back.id == disk);
    CHECK(t.service->stats().disks_away == 1);
    // The next pass offers the copies again instead of demoting.
    auto [ec, n] = test::run_to_completion(t.io, t.tier->demote());
    REQUIRE_FALSE(ec);
    CHECK(n == 0);
    const auto st = t.tier->stats();
    CHECK(st.offers == 1);
    CHECK(st.not_readopted == 2);  // the removed and the rewritten key
    CHECK(st.readopted == disk_only.size() - 2);
    t.demote_all();
    CHECK(t.service->stats().disks_away == 0);
    for (std::size_t i : disk_only) {
      const auto r = t.read(i, 1, size);
      CHECK(r.wrong == (i == rewritten ? 1u : 0u));  // the new bytes, not the disk's
      CHECK(r.missing == (i == removed ? 1u : 0u));
    }
  }
  // After a restart the index lists exactly what was taken back.
  tiered t(file, 1 << 20, 8 << 20);
  CHECK(t.tier->stats().found == disk_only.size() - 2);
  CHECK(t.tier->stats().adopted == disk_only.size() - 2);
  for (std::size_t i : disk_only) {
    const auto r = t.read(i, 1, size);
    const bool expected = i != removed && i != rewritten;
    CHECK_MESSAGE(r.exact == (expected ? 1u : 0u), i);
    CHECK(r.wrong == 0);
  }
  CHECK(t.service->check_invariants().empty());
}

TEST_CASE("disk tier: a torn index tail (a crash mid-append) loses only that record") {
  test::scratch_dir s(test::disk_backed_tmp);
  constexpr std::size_t size = 64 * 1024;
  const auto file = s.path / "tier";
  std::size_t with_copy = 0;
  {
    tiered t(file, 1 << 20, 8 << 20);
    t.put_demoting(16, 4, size);
    with_copy = t.tier->stats().demoted;
    REQUIRE(with_copy > 0);
  }
  {
    std::ofstream index(disk_tier<embedded_disk_store>::index_path_of(file), std::ios::binary | std::ios::app);
    index << "CKIX\x40\x00\x00\x00garbage";  // a record cut short
  }
  tiered t(file, 1 << 20, 8 << 20);
  CHECK(t.tier->stats().index_torn);
  CHECK(t.tier->stats().adopted == with_copy);
  CHECK(t.read(0, 16, size).wrong == 0);
}

TEST_CASE("disk tier: a file held by another tier, or of another size, or a second disk for one node is refused at open") {
  test::scratch_dir s(test::disk_backed_tmp);
  tiered t(s.path / "tier", 1 << 20, 1 << 20);
  auto [busy, none] = test::run_to_completion(t.io, disk_tier<embedded_disk_store>::open(t.store, {s.path / "tier", 1 << 20}));
  CHECK(busy == std::error_code(EAGAIN, std::system_category()));
  CHECK(none == nullptr);
  auto [other, none2] = test::run_to_completion(t.io, disk_tier<embedded_disk_store>::open(t.store, {s.path / "x", 1000}));
  CHECK(other == std::errc::invalid_argument);  // under one block
  // A second disk for the same node: its tier numbers one disk's records.
  auto [second, none3] = test::run_to_completion(t.io, disk_tier<embedded_disk_store>::open(t.store, {s.path / "y", 1 << 20}));
  CHECK(second == errc::invalid_argument);
  CHECK(none3 == nullptr);
}

}  // TEST_SUITE
