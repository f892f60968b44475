// The disk tier's batch_get against a raw O_DIRECT io_uring read of the
// same bytes from the same file, in the same run.
//
// An embedded store with a small memory tier and a disk tier: objects are
// put until the memory tier has released them (each is on disk only), then
//   - store:  batch_get of 64 x 64 KiB (and 16 x 1 MiB) keys, with query
//             results in hand (the two-step read: no metadata in the loop),
//             into block-aligned buffers: the disk lane reads straight
//             into them;
//   - raw:    the same extents of the same file read with io_uring, one
//             read per object, O_DIRECT, into the same buffers: what the
//             device and the kernel give, with nothing of corokv.
// Both run alternately for the same time and report GB/s; the ratio is the
// target (at least 80%). Every byte the store returns is checked once.
// The same pair again into memory registered with the store (so the disk
// lane reads into fixed buffers) and with the raw side's ring (read_fixed):
//   - store registered / raw fixed: the same comparison, with the kernel's
//     page pinning per request taken out on both sides;
//   - raw fixed / raw: what fixed buffers are worth on this device.
//
//   disk_bench [--seconds S] [--dir DIR] [--json PATH]

#include <corokv/disk_tier.hpp>

#include "bench_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <liburing.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;
using clock_type = std::chrono::steady_clock;

namespace {

struct aligned {
  std::byte* p;
  explicit aligned(std::size_t n) : p(static_cast<std::byte*>(std::aligned_alloc(4096, n))) {}
  ~aligned() { std::free(p); }
};

std::string file_system_of(const std::filesystem::path& dir) {
  std::ifstream mounts("/proc/mounts");
  std::string dev, at, type, best_type = "unknown";
  std::size_t best = 0;
  const std::string target = std::filesystem::canonical(dir).string();
  std::string rest;
  while (mounts >> dev >> at >> type && std::getline(mounts, rest))
    if (target.rfind(at, 0) == 0 && at.size() >= best) {
      best = at.size();
      best_type = type;
    }
  return best_type;
}

struct shape {
  std::size_t keys;
  std::size_t size;
};

// The four sides, in the order they alternate.
enum side { store_plain, raw_plain, store_registered, raw_fixed, sides };
constexpr const char* side_names[sides] = {"store", "raw", "store_registered", "raw_fixed"};

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args("disk_bench", {{"--seconds", "S"}, {"--dir", "DIR"}, {"--json", "PATH"}});
  if (!args.parse(argc, argv)) return 2;
  const double seconds = args.number("--seconds", 2);
  const std::filesystem::path dir = args.text("--dir", "/var/tmp");
  const std::string json_path = args.text("--json", "");
  const auto scratch = dir / fmt::format("corokv-disk-bench-{}", ::getpid());
  std::filesystem::create_directories(scratch);
  struct cleanup {
    std::filesystem::path p;
    ~cleanup() { std::filesystem::remove_all(p); }
  } remove_scratch{scratch};

  // 32 MiB of memory, 512 MiB of disk; demotion from a tenth of memory.
  asio::io_context io;
  meta::service_options so;
  so.demote_watermark = 0.1;
  so.high_watermark = 0.9;
  so.low_watermark = 0.5;
  auto service = std::make_shared<meta::service>(so);
  embedded_disk_store kv(io.get_executor(), embedded_metadata(service),
                         embedded_disk_transport(router_options{}, memcpy_lane(), disk_lane(io.get_executor())),
                         store_options{.buffer_pool_size = 0});
  if (bench::run_to_completion(io, kv.add_segment(32u << 20, asio::use_awaitable)) == 0) return 1;
  auto [open_ec, tier] = bench::run_to_completion(io, disk_tier<embedded_disk_store>::open(kv, {scratch / "tier", 512u << 20}));
  if (open_ec) {
    std::fprintf(stderr, "disk_bench: disk tier: %s\n", open_ec.message().c_str());
    return 1;
  }

  const shape shapes[] = {{64, 64 << 10}, {16, 1 << 20}};
  nlohmann::json report{{"file_system", file_system_of(scratch)},
                        {"o_direct", tier->file().direct()},
                        {"buffered_reason", tier->file().buffered_reason()},
                        {"seconds_per_side", seconds}};
  int status = 0;
  for (const shape& sh : shapes) {
    // Put the keys, then enough others that memory releases them all.
    const std::string prefix = fmt::format("s{}-", sh.size);
    std::vector<std::string> keys;
    for (std::size_t i = 0; i < sh.keys; ++i) keys.push_back(prefix + std::to_string(i));
    std::vector<std::vector<std::byte>> values(sh.keys, std::vector<std::byte>(sh.size));
    std::mt19937_64 rng(sh.size);
    for (auto& v : values)
      for (auto& b : v) b = static_cast<std::byte>(rng());
    std::vector<asio::const_buffer> in;
    for (auto& v : values) in.emplace_back(v.data(), v.size());
    for (auto e : bench::run_to_completion(io, kv.batch_put(keys, in, asio::use_awaitable)))
      if (e != errc::success) return 1;
    const std::vector<std::byte> filler(1 << 20);
    for (int round = 0; round < 64; ++round) {
      (void)bench::run_to_completion(io, tier->demote());
      const std::string k = fmt::format("{}filler-{}", prefix, round);
      (void)bench::run_to_completion(io, kv.batch_put(std::vector<std::string>{k}, std::vector<asio::const_buffer>{asio::buffer(filler)},
                                      asio::use_awaitable));
    }
    (void)bench::run_to_completion(io, tier->demote());
    auto q = bench::run_to_completion(io, kv.batch_query(keys, asio::use_awaitable));
    for (auto& r : q)
      if (!r.ok() || r.replicas.size() != 1 || r.replicas[0].segment != tier->segment()) {
        std::fprintf(stderr, "disk_bench: a key is not on disk only; memory too large for this run\n");
        return 1;
      }

    const std::size_t bytes = sh.keys * sh.size;
    aligned out(bytes), out_registered(bytes);
    if (const auto ec = kv.register_buffer(asio::buffer(out_registered.p, bytes))) {
      std::fprintf(stderr, "disk_bench: register_buffer: %s\n", ec.message().c_str());
      return 1;
    }
    std::vector<asio::mutable_buffer> buffers, registered_buffers;
    for (std::size_t i = 0; i < sh.keys; ++i) {
      buffers.emplace_back(out.p + i * sh.size, sh.size);
      registered_buffers.emplace_back(out_registered.p + i * sh.size, sh.size);
    }
    // Once each, checked.
    for (auto* into : {&buffers, &registered_buffers}) {
      auto got = bench::run_to_completion(io, kv.batch_get(keys, q, *into, asio::use_awaitable));
      for (std::size_t i = 0; i < sh.keys; ++i)
        if (!got[i].ok() || std::memcmp((*into)[i].data(), values[i].data(), sh.size) != 0) {
          std::fprintf(stderr, "disk_bench: wrong bytes from the store\n");
          return 1;
        }
    }
    const auto fixed_before = kv.transport().lane<disk_lane>().stats().fixed_pieces;

    // The raw side: its own ring and descriptor on the same file; the
    // registered memory is its fixed buffer 0.
    const int fd = ::open((scratch / "tier").c_str(), O_RDONLY | (tier->file().direct() ? O_DIRECT : 0));
    io_uring ring;
    if (fd < 0 || io_uring_queue_init(static_cast<unsigned>(sh.keys), &ring, 0) < 0) return 1;
    const iovec fixed_iov{out_registered.p, bytes};
    if (const int r = io_uring_register_buffers(&ring, &fixed_iov, 1); r < 0) {
      std::fprintf(stderr, "disk_bench: fixed buffers refused (%s; RLIMIT_MEMLOCK?)\n", std::strerror(-r));
      return 1;
    }
    auto raw_batch = [&](bool fixed) {
      for (std::size_t i = 0; i < sh.keys; ++i) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (fixed)
          io_uring_prep_read_fixed(sqe, fd, out_registered.p + i * sh.size, static_cast<unsigned>(sh.size),
                                   q[i].replicas[0].offset, 0);
        else
          io_uring_prep_read(sqe, fd, out.p + i * sh.size, static_cast<unsigned>(sh.size), q[i].replicas[0].offset);
      }
      io_uring_submit_and_wait(&ring, static_cast<unsigned>(sh.keys));
      io_uring_cqe* cqe;
      unsigned head, n = 0;
      bool ok = true;
      io_uring_for_each_cqe(&ring, head, cqe) {
        ok &= cqe->res == static_cast<int>(sh.size);
        ++n;
      }
      io_uring_cq_advance(&ring, n);
      return ok;
    };
    auto store_batch = [&](const std::vector<asio::mutable_buffer>& into) {
      auto r = bench::run_to_completion(io, kv.batch_get(keys, q, into, asio::use_awaitable));
      bool ok = true;
      for (auto& g : r) ok &= g.ok();
      return ok;
    };
    auto run_side = [&](int which) {
      switch (which) {
        case store_plain: return store_batch(buffers);
        case raw_plain: return raw_batch(false);
        case store_registered: return store_batch(registered_buffers);
        default: return raw_batch(true);
      }
    };
    double time[sides] = {};
    std::size_t batches[sides] = {};
    // Alternate in slices so that every side sees the same device state.
    const int slices = 10;
    for (int slice = 0; slice < slices; ++slice) {
      for (int which = 0; which < sides; ++which) {
        const auto start = clock_type::now();
        const auto until = start + std::chrono::duration<double>(seconds / slices);
        do {
          if (!run_side(which)) {
            std::fprintf(stderr, "disk_bench: a read failed\n");
            return 1;
          }
          ++batches[which];
        } while (clock_type::now() < until);
        time[which] += std::chrono::duration<double>(clock_type::now() - start).count();
      }
    }
    io_uring_queue_exit(&ring);
    ::close(fd);
    const std::uint64_t fixed_pieces = kv.transport().lane<disk_lane>().stats().fixed_pieces - fixed_before;
    if (const auto ec = kv.unregister_buffer(asio::buffer(out_registered.p, bytes))) {
      std::fprintf(stderr, "disk_bench: unregister_buffer: %s\n", ec.message().c_str());
      return 1;
    }
    double gbps[sides];
    for (int which = 0; which < sides; ++which)
      gbps[which] = static_cast<double>(batches[which] * bytes) / time[which] / 1e9;
    const double ratio = gbps[store_plain] / gbps[raw_plain];
    const double ratio_registered = gbps[store_registered] / gbps[raw_fixed];
    fmt::print("{:>3} x {:>7} B   store {:6.2f} GB/s   raw io_uring O_DIRECT {:6.2f} GB/s   ratio {:5.1f}%\n", sh.keys,
               sh.size, gbps[store_plain], gbps[raw_plain], 100 * ratio);
    fmt::print("{:>3} x {:>7} B   registered memory: store {:6.2f} GB/s   raw fixed buffers {:6.2f} GB/s   ratio "
               "{:5.1f}%   (raw fixed / raw {:5.1f}%)\n",
               sh.keys, sh.size, gbps[store_registered], gbps[raw_fixed], 100 * ratio_registered,
               100 * gbps[raw_fixed] / gbps[raw_plain]);
    nlohmann::json r{{"ratio", ratio},
                     {"ratio_registered", ratio_registered},
                     {"fixed_over_plain", gbps[raw_fixed] / gbps[raw_plain]},
                     {"store_fixed_pieces", fixed_pieces}};
    for (int which = 0; which < sides; ++which) {
      r[fmt::format("{}_gbps", side_names[which])] = gbps[which];
      r[fmt::format("{}_batches", side_names[which])] = batches[which];
    }
    report[fmt::format("{}x{}", sh.keys, sh.size)] = r;
    // Every registered-memory batch of the store went through fixed buffers.
    if (fixed_pieces < batches[store_registered] * sh.keys) {
      std::fprintf(stderr, "disk_bench: registered memory was not read through fixed buffers\n");
      status = 1;
    }
  }
  report["disk_lane"] = {{"direct_pieces", kv.transport().lane<disk_lane>().stats().direct_pieces},
                         {"bounced_pieces", kv.transport().lane<disk_lane>().stats().bounced_pieces}};
  fmt::print("file system {}, O_DIRECT {}\n", report["file_system"].get<std::string>(),
             tier->file().direct() ? "yes" : "no");
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  return status;
}
