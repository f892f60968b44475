// The disk lane: exact bytes through O_DIRECT and buffered files, fixed
// buffers, io_uring refused, cancellation. Part of corokv_disk_tests
// (tests/disk/main.cpp: skipped where io_uring is refused).

#include <corokv/disk/disk_file.hpp>
#include <corokv/transport/disk_lane.hpp>

#include "../support/bytes.hpp"
#include "../support/run.hpp"
#include "../support/scratch_dir.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;
using namespace corokv::transport;
using namespace corokv::memory;
using namespace std::chrono_literals;

TEST_SUITE("disk") {

TEST_CASE("disk lane: exact bytes back through O_DIRECT and buffered files, aligned or not, with per-key errors") {
  test::scratch_dir s(test::disk_backed_tmp);
  asio::io_context io;
  disk_lane lane(io.get_executor(), {{32}, 64 * 1024, 64 * 1024});
  std::error_code ec;
  auto direct = std::make_shared<disk::disk_file>(disk::disk_file::open(s.path / "a", 4 << 20, ec));
  REQUIRE_FALSE(ec);
  auto buffered = std::make_shared<disk::disk_file>(disk::disk_file::open(s.path / "b", 1 << 20, ec, false));
  REQUIRE_FALSE(ec);
  REQUIRE_FALSE(lane.attach(7, direct));
  REQUIRE_FALSE(lane.attach(8, buffered));
  CHECK(lane.attach(7, direct) == errc::already_exists);
  CHECK(lane.rank({7, nullptr}) == ranks::disk);
  CHECK(lane.rank({9, nullptr}) == ranks::unreachable);

  // Lengths: whole blocks, a partial tail, under a block, large (split in
  // pieces), on both files; sources aligned and not.
  struct item {
    segment_id seg;
    std::uint64_t offset, length;
    std::size_t skew;
  };
  const std::vector<item> items{{7, 0, 65536, 0},         {7, 65536, 65536 + 300, 0}, {7, 3 * 65536, 100, 0},
                                {7, 4 * 65536, 200000, 8}, {7, 1 << 20, 3 << 20, 0},   {8, 0, 5000, 3},
                                {8, 10000, 777, 0}};
  std::vector<std::vector<std::byte>> values;
  std::vector<std::unique_ptr<test::aligned_memory>> sources, targets;
  std::vector<write_request> writes;
  for (std::size_t i = 0; i < items.size(); ++i) {
    values.push_back(test::random_bytes(items[i].length, static_cast<unsigned>(10 + i)));
    sources.push_back(std::make_unique<test::aligned_memory>(items[i].length, items[i].skew));
    std::memcpy(sources.back()->data(), values.back().data(), items[i].length);
    writes.push_back({{items[i].seg, 1, items[i].offset, items[i].length},
                      asio::const_buffer(sources.back()->data(), items[i].length)});
  }
  std::vector<errc> status(writes.size());
  CHECK_FALSE(test::run_to_completion(io, lane.write(writes, status)));
  for (std::size_t i = 0; i < items.size(); ++i) CHECK_MESSAGE(status[i] == errc::success, i);

  std::vector<read_request> reads;
  for (std::size_t i = 0; i < items.size(); ++i) {
    targets.push_back(std::make_unique<test::aligned_memory>(items[i].length, (items[i].skew + 5) % 9));
    reads.push_back({{items[i].seg, 1, items[i].offset, items[i].length},
                     asio::mutable_buffer(targets.back()->data(), items[i].length)});
  }
  // Per-key errors beside them: a segment not here, beyond the end, a short buffer.
  std::byte small[10];
  reads.push_back({{99, 1, 0, 10}, asio::mutable_buffer(small, 10)});
  reads.push_back({{8, 1, (1 << 20) - 4, 10}, asio::mutable_buffer(small, 10)});
  reads.push_back({{7, 1, 0, 4096}, asio::mutable_buffer(small, 10)});
  status.assign(reads.size(), errc::success);
  CHECK_FALSE(test::run_to_completion(io, lane.read(reads, status)));
  for (std::size_t i = 0; i < items.size(); ++i) {
    CHECK_MESSAGE(status[i] == errc::success, i);
    CHECK_MESSAGE(std::memcmp(targets[i]->data(), values[i].data(), items[i].length) == 0, i);
  }
  CHECK(status[items.size()] == errc::segment_not_found);
  CHECK(status[items.size() + 1] == errc::segment_not_found);
  CHECK(status[items.size() + 2] == errc::buffer_too_small);
  const auto st = lane.stats();
  CHECK(st.direct_pieces > 0);
  CHECK(st.bounced_pieces > 0);
  CHECK(st.failed_pieces == 0);
  CHECK(st.own_bounce_buffers > 0);  // 64 KiB of registered bounce is too small for the 200000-byte one

  // A write of the wrong size, and one off a block boundary on O_DIRECT.
  std::vector<write_request> bad{{{7, 1, 0, 100}, asio::const_buffer(small, 10)},
                                 {{7, 1, 100, 10}, asio::const_buffer(small, 10)}};
  status.assign(2, errc::success);
  CHECK_FALSE(test::run_to_completion(io, lane.write(bad, status)));
  CHECK(status[0] == errc::size_mismatch);
  CHECK(status[1] == errc::invalid_argument);

  lane.detach(8);
  CHECK(lane.rank({8, nullptr}) == ranks::unreachable);
}

TEST_CASE("disk lane: registered memory is read through fixed buffers, registered before or after the ring, past the table, as any memory") {
  test::scratch_dir s(test::disk_backed_tmp);
  asio::io_context io;
  disk_lane_options o;
  o.fixed_buffer_slots = 3;  // the bounce buffer's and two
  disk_lane lane(io.get_executor(), o);
  constexpr std::size_t n = 256 * 1024;
  test::aligned_memory a(n), b(n), c(n), d(n);
  auto reg = [&](test::aligned_memory& m, std::unique_ptr<lane_registration>& out) {
    auto region = std::make_unique<registered_region>(m.data(), n, 1);
    REQUIRE_FALSE(lane.register_region(*region, out));
    return region;
  };
  std::unique_ptr<lane_registration> ra, rb, rc, rd;
  auto region_a = reg(a, ra);  // before the ring exists: installed when it does
  std::error_code ec;
  auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(s.path / "f", 1 << 20, ec));
  REQUIRE_FALSE(ec);
  REQUIRE_FALSE(lane.attach(1, file));
  if (!lane.fixed_buffer_table()) {
    MESSAGE("no table of fixed buffers here (Linux before 5.19, or RLIMIT_MEMLOCK): nothing to check");
    return;
  }
  // Written from registered memory: through its fixed buffer too.
  const auto value = test::random_bytes(n, 99);
  std::memcpy(a.data(), value.data(), n);
  std::vector<write_request> w{{{1, 1, 0, n}, asio::const_buffer(a.data(), n), ra.get()}};
  std::vector<errc> status(1);
  REQUIRE_FALSE(test::run_to_completion(io, lane.write(w, status)));
  REQUIRE(status[0] == errc::success);
  CHECK(lane.stats().fixed_pieces == 1);

  auto read_into = [&](test::aligned_memory& m, const lane_registration* r) {
    std::memset(m.data(), 0, n);
    std::vector<read_request> rq{{{1, 1, 0, n}, asio::mutable_buffer(m.data(), n), r}};
    std::vector<errc> st(1);
    const auto before = lane.stats().fixed_pieces;
    REQUIRE_FALSE(test::run_to_completion(io, lane.read(rq, st)));
    CHECK(st[0] == errc::success);
    CHECK(std::memcmp(m.data(), value.data(), n) == 0);
    return lane.stats().fixed_pieces - before;
  };
  CHECK(read_into(a, ra.get()) == 1);
  auto region_b = reg(b, rb);  // after: installed at once
  CHECK(read_into(b, rb.get()) == 1);
  CHECK(lane.stats().unfixed_regions == 0);
  auto region_c = reg(c, rc);  // the table is full: plain reads
  CHECK(lane.stats().unfixed_regions == 1);
  CHECK(read_into(c, rc.get()) == 0);
  // Unregistered, its slot goes to the region that waited for one.
  rb.reset();
  CHECK(read_into(c, rc.get()) == 1);
  auto region_d = reg(d, rd);
  CHECK(lane.stats().unfixed_regions == 2);
  CHECK(read_into(d, rd.get()) == 0);
  CHECK(lane.stats().failed_pieces == 0);
}

#if defined(__x86_64__)
TEST_CASE("disk lane: where io_uring is refused, attaching a file fails with the kernel's error, nothing else") {
  test::scratch_dir s(test::disk_backed_tmp);
  std::error_code ec;
  auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(s.path / "a", 1 << 20, ec));
  REQUIRE_FALSE(ec);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // io_uring_setup answers ENOSYS, as on a kernel without io_uring.
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
      ::_exit(3);
    asio::io_context io;
    disk_lane lane(io.get_executor());  // costs nothing until a file is attached
    const std::error_code attached = lane.attach(1, file);
    ::_exit(attached == std::error_code(ENOSYS, std::system_category()) && !lane.attached(1) ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif

TEST_CASE("disk lane: a cancelled read returns cancelled, what it reports as read is exact") {
  test::scratch_dir s(test::disk_backed_tmp);
  asio::io_context io;
  disk_lane lane(io.get_executor());
  std::error_code ec;
  auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(s.path / "a", 16 << 20, ec));
  REQUIRE_FALSE(ec);
  REQUIRE_FALSE(lane.attach(1, file));
  const auto data = test::random_bytes(16 << 20, 3);
  std::vector<write_request> writes;
  for (std::size_t i = 0; i < 16; ++i)
    writes.push_back({{1, 1, i << 20, 1 << 20}, asio::const_buffer(&data[i << 20], 1 << 20)});
  std::vector<errc> status(16);
  REQUIRE_FALSE(test::run_to_completion(io, lane.write(writes, status)));

  int cancelled_batches = 0;
  for (int round = 0; round < 20; ++round) {
    test::aligned_memory back(16 << 20);
    std::memset(back.data(), 0, 16 << 20);
    std::vector<read_request> reads;
    for (std::size_t i = 0; i < 16; ++i)
      reads.push_back({{1, 1, i << 20, 1 << 20}, asio::mutable_buffer(back.data() + (i << 20), 1 << 20)});
    asio::cancellation_signal cancel;
    std::error_code got;
    bool done = false;
    asio::co_spawn(io, lane.read(reads, status),
                   asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr, std::error_code e) {
                     got = e;
                     done = true;
                   }));
    io.restart();
    io.poll_one();  // the batch is submitted
    cancel.emit(asio::cancellation_type::terminal);
    io.run();
    REQUIRE(done);
    if (got == errc::cancelled) ++cancelled_batches;
    else CHECK_FALSE(got);
    for (std::size_t i = 0; i < 16; ++i) {
      CHECK((status[i] == errc::success || status[i] == errc::cancelled));
      if (status[i] == errc::success) CHECK(std::memcmp(back.data() + (i << 20), &data[i << 20], 1 << 20) == 0);
    }
  }
  MESSAGE("batches that saw the cancellation: ", cancelled_batches, " of 20");
  CHECK(lane.ring_stats().completed == lane.ring_stats().submitted);
}

}  // TEST_SUITE
