// The disk tier's pieces: the O_DIRECT plan (no I/O), the io_uring queue on
// an Asio executor (files and pipes), the disk file and the disk lane.
// io_uring refused here (kernel.io_uring_disabled, seccomp): the test says
// so and exits 77, which ctest counts as skipped.

#define DOCTEST_CONFIG_IMPLEMENT
#include <corokv/disk/disk_file.hpp>
#include <corokv/disk/io_plan.hpp>
#include <corokv/io/uring_queue.hpp>
#include <corokv/transport/disk_lane.hpp>

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
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;
using namespace std::chrono_literals;

namespace {

struct scratch {
  std::filesystem::path dir;
  scratch() {
    char tmpl[] = "/var/tmp/corokv-disk-XXXXXX";  // a disk-backed file system, not tmpfs
    dir = ::mkdtemp(tmpl);
  }
  ~scratch() { std::filesystem::remove_all(dir); }
};

template <class T>
T run_on(asio::io_context& io, asio::awaitable<T> task) {
  auto f = asio::co_spawn(io, std::move(task), asio::use_future);
  io.restart();
  io.run();
  return f.get();
}

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

// Memory aligned to a block, with `skew` bytes added to the start when asked.
struct aligned_memory {
  std::byte* base;
  std::size_t skew;
  aligned_memory(std::size_t n, std::size_t skew_ = 0)
      : base(static_cast<std::byte*>(std::aligned_alloc(disk::block_size, disk::round_up_to_block(n + skew_)))),
        skew(skew_) {}
  ~aligned_memory() { std::free(base); }
  std::byte* data() const { return base + skew; }
};

}  // namespace

int main(int argc, char** argv) {
  io_uring ring;
  if (const int r = io_uring_queue_init(2, &ring, 0); r < 0) {
    std::printf("disk tests: io_uring unavailable here (%s): skipped\n", std::strerror(-r));
    return 77;
  }
  io_uring_queue_exit(&ring);
  doctest::Context context(argc, argv);
  return context.run();
}

TEST_SUITE("disk") {

TEST_CASE("io plan: aligned transfers go straight to memory, partial tail blocks through one bounce block") {
  disk::io_plan plan;
  const disk::io_extent x[] = {{0, 3 * 4096, 0x10000}, {8192 * 4, 4096 + 100, 0x20000}};
  plan.build(x, disk::io_plan::direction::read, /*direct=*/true);
  REQUIRE(plan.pieces().size() == 3);
  CHECK(plan.pieces()[0].bounce == false);
  CHECK(plan.pieces()[0].length == 3 * 4096);
  CHECK(plan.pieces()[1].bounce == false);
  CHECK(plan.pieces()[1].length == 4096);
  CHECK(plan.pieces()[2].bounce == true);
  CHECK(plan.pieces()[2].file_offset == 8192 * 4 + 4096);
  CHECK(plan.pieces()[2].length == 4096);
  REQUIRE(plan.copies().size() == 1);
  CHECK(plan.copies()[0].caller_offset == 4096);
  CHECK(plan.copies()[0].length == 100);
  CHECK(plan.bounce_bytes() == 4096);
}

TEST_CASE("io plan: unaligned memory or offsets go whole through bounce memory over the blocks they touch") {
  disk::io_plan plan;
  const disk::io_extent x[] = {{4096, 5000, 0x10001}, {100, 50, 0x20000}};
  plan.build(x, disk::io_plan::direction::read, true);
  REQUIRE(plan.pieces().size() == 2);
  CHECK(plan.pieces()[0].bounce);
  CHECK(plan.pieces()[0].file_offset == 4096);
  CHECK(plan.pieces()[0].length == 8192);
  CHECK(plan.pieces()[1].file_offset == 0);
  CHECK(plan.pieces()[1].length == 4096);
  CHECK(plan.pieces()[1].memory_offset == 8192);  // after the first one's blocks
  REQUIRE(plan.copies().size() == 2);
  CHECK(plan.copies()[1].bounce_offset == 8192 + 100);
  CHECK(plan.bounce_bytes() == 3 * 4096);
  for (auto& p : plan.pieces()) CHECK(p.memory_offset % disk::block_size == 0);
}

TEST_CASE("io plan: O_DIRECT writes must start on a block, buffered files take ranges as they are, split at max_piece") {
  disk::io_plan plan;
  const disk::io_extent x[] = {{100, 50, 0x10000}, {0, 0, 0x10000}, {4096, 20000, 0x20000}};
  plan.build(x, disk::io_plan::direction::write, true);
  CHECK(plan.status()[0] == errc::invalid_argument);
  CHECK(plan.status()[1] == errc::invalid_argument);
  CHECK(plan.status()[2] == errc::success);
  for (auto& p : plan.pieces()) CHECK(p.transfer == 2);

  plan.build(x, disk::io_plan::direction::write, /*direct=*/false, /*max_piece=*/8192);
  CHECK(plan.status()[0] == errc::success);
  CHECK(plan.bounce_bytes() == 0);
  REQUIRE(plan.pieces().size() == 4);  // 50 bytes; 20000 in 8192 + 8192 + 3616
  CHECK(plan.pieces()[0].length == 50);
  CHECK(plan.pieces()[3].length == 20000 - 2 * 8192);
  CHECK(plan.pieces()[3].memory_offset == 2 * 8192);
}

TEST_CASE("uring queue: a batch larger than the ring writes and reads a file, the io_context then runs out of work") {
  scratch s;
  const auto path = s.dir / "f";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
  REQUIRE(fd >= 0);
  asio::io_context io;
  std::error_code ec;
  auto q = io::uring_queue::open(io.get_executor(), {8}, ec);
  REQUIRE_FALSE(ec);
  constexpr std::size_t n = 100, len = 1000;
  const auto data = random_bytes(n * len, 1);
  std::vector<io::uring_request> writes(n);
  for (std::size_t i = 0; i < n; ++i)
    writes[i] = {io::uring_request::kind::write, fd, false, -1, const_cast<std::byte*>(&data[i * len]), len, i * len, 0};
  CHECK_FALSE(run_on(io, q->run(writes)));
  for (auto& w : writes) CHECK(w.result == static_cast<int>(len));
  std::vector<std::byte> back(n * len);
  std::vector<io::uring_request> reads(n);
  for (std::size_t i = 0; i < n; ++i)
    reads[i] = {io::uring_request::kind::read, fd, false, -1, &back[i * len], len, i * len, 0};
  io::uring_request sync{io::uring_request::kind::fsync, fd};
  reads.push_back(sync);
  CHECK_FALSE(run_on(io, q->run(reads)));
  CHECK(back == data);
  CHECK(reads.back().result == 0);
  CHECK(q->in_flight() == 0);
  CHECK(q->stats().completed == 2 * n + 1);
  // Nothing in flight: nothing keeps run() waiting (no eventfd wait left).
  io.restart();
  CHECK(io.run_for(1s) == 0);
  ::close(fd);
}

TEST_CASE("uring queue: a cancelled read completes only once the kernel answered it, finished requests keep results") {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  scratch s;
  const int fd = ::open((s.dir / "f").c_str(), O_RDWR | O_CREAT, 0600);
  REQUIRE(::pwrite(fd, "abcd", 4, 0) == 4);
  asio::io_context io;
  std::error_code ec;
  auto q = io::uring_queue::open(io.get_executor(), {}, ec);
  REQUIRE_FALSE(ec);
  char from_pipe[16]{}, from_file[4]{};
  std::vector<io::uring_request> reqs{{io::uring_request::kind::read, pipe_fds[0], false, -1, from_pipe, 16, 0, 0},
                                      {io::uring_request::kind::read, fd, false, -1, from_file, 4, 0, 0}};
  asio::cancellation_signal cancel;
  std::error_code got{errc::success};
  bool done = false;
  q->async_run(reqs, asio::bind_cancellation_slot(cancel.slot(), [&](std::error_code e) {
                 got = e;
                 done = true;
               }));
  io.run_for(100ms);
  CHECK_FALSE(done);  // the pipe has nothing: its read waits
  CHECK(q->in_flight() == 1);
  cancel.emit(asio::cancellation_type::terminal);
  io.restart();
  io.run_for(2s);
  REQUIRE(done);
  CHECK(got == errc::cancelled);
  CHECK(reqs[0].result == -ECANCELED);
  CHECK(reqs[1].result == 4);
  CHECK(std::string(from_file, 4) == "abcd");
  CHECK(q->stats().cancel_requests >= 1);
  CHECK(q->in_flight() == 0);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  ::close(fd);
}

TEST_CASE("uring queue: batches from several threads at once each get their own results") {
  scratch s;
  const int fd = ::open((s.dir / "f").c_str(), O_RDWR | O_CREAT, 0600);
  const auto data = random_bytes(1 << 20, 2);
  REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::error_code ec;
  auto q = io::uring_queue::open(io.get_executor(), {16}, ec);
  REQUIRE_FALSE(ec);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      asio::io_context own;
      for (int round = 0; round < 50; ++round) {
        std::vector<std::byte> back(64 * 1024);
        std::vector<io::uring_request> reqs(16);
        const std::size_t base = static_cast<std::size_t>((t * 50 + round) % 15) * 64 * 1024;
        for (std::size_t i = 0; i < reqs.size(); ++i)
          reqs[i] = {io::uring_request::kind::read, fd, false, -1, &back[i * 4096], 4096, base + i * 4096, 0};
        auto f = asio::co_spawn(own, q->run(reqs), asio::use_future);
        own.restart();
        own.run();
        if (f.get() || std::memcmp(back.data(), data.data() + base, back.size()) != 0) ++wrong;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  guard.reset();
  runner.join();
  ::close(fd);
}

TEST_CASE("disk file: created at its size, kept on reopen, locked against a second user, refused at another size") {
  scratch s;
  const auto path = s.dir / "tier";
  std::error_code ec;
  {
    auto f = disk::disk_file::open(path, 1 << 20, ec);
    REQUIRE_FALSE(ec);
    CHECK(f.valid());
    CHECK_FALSE(f.existed());
    CHECK(std::filesystem::file_size(path) == 1 << 20);
    CHECK(f.direct());  // /var/tmp is on a disk file system here
    const int w = ::open(path.c_str(), O_WRONLY);
    REQUIRE(::pwrite(w, "keep", 4, 0) == 4);
    ::close(w);
    auto second = disk::disk_file::open(path, 1 << 20, ec);
    CHECK(ec == std::error_code(EAGAIN, std::system_category()));
  }
  auto again = disk::disk_file::open(path, 1 << 20, ec);
  REQUIRE_FALSE(ec);
  CHECK(again.existed());
  char head[4];
  const int r = ::open(path.c_str(), O_RDONLY);
  REQUIRE(::pread(r, head, 4, 0) == 4);
  ::close(r);
  CHECK(std::string(head, 4) == "keep");
  again = {};
  disk::disk_file::open(path, 2 << 20, ec);
  CHECK(ec == std::errc::invalid_argument);
  disk::disk_file::open(s.dir / "odd", 1000, ec);
  CHECK(ec == std::errc::invalid_argument);
  auto buffered = disk::disk_file::open(s.dir / "buffered", 1 << 20, ec, /*try_direct=*/false);
  REQUIRE_FALSE(ec);
  CHECK_FALSE(buffered.direct());
  CHECK_FALSE(buffered.buffered_reason().empty());
}

TEST_CASE("disk lane: exact bytes back through O_DIRECT and buffered files, aligned or not, with per-key errors") {
  scratch s;
  asio::io_context io;
  disk_lane lane(io.get_executor(), {{32}, 64 * 1024, 64 * 1024});
  std::error_code ec;
  auto direct = std::make_shared<disk::disk_file>(disk::disk_file::open(s.dir / "a", 4 << 20, ec));
  REQUIRE_FALSE(ec);
  auto buffered = std::make_shared<disk::disk_file>(disk::disk_file::open(s.dir / "b", 1 << 20, ec, false));
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
  std::vector<std::unique_ptr<aligned_memory>> sources, targets;
  std::vector<write_request> writes;
  for (std::size_t i = 0; i < items.size(); ++i) {
    values.push_back(random_bytes(items[i].length, static_cast<unsigned>(10 + i)));
    sources.push_back(std::make_unique<aligned_memory>(items[i].length, items[i].skew));
    std::memcpy(sources.back()->data(), values.back().data(), items[i].length);
    writes.push_back({{items[i].seg, 1, items[i].offset, items[i].length},
                      asio::const_buffer(sources.back()->data(), items[i].length)});
  }
  std::vector<errc> status(writes.size());
  CHECK_FALSE(run_on(io, lane.write(writes, status)));
  for (std::size_t i = 0; i < items.size(); ++i) CHECK_MESSAGE(status[i] == errc::success, i);

  std::vector<read_request> reads;
  for (std::size_t i = 0; i < items.size(); ++i) {
    targets.push_back(std::make_unique<aligned_memory>(items[i].length, (items[i].skew + 5) % 9));
    reads.push_back({{items[i].seg, 1, items[i].offset, items[i].length},
                     asio::mutable_buffer(targets.back()->data(), items[i].length)});
  }
  // Per-key errors beside them: a segment not here, beyond the end, a short buffer.
  std::byte small[10];
  reads.push_back({{99, 1, 0, 10}, asio::mutable_buffer(small, 10)});
  reads.push_back({{8, 1, (1 << 20) - 4, 10}, asio::mutable_buffer(small, 10)});
  reads.push_back({{7, 1, 0, 4096}, asio::mutable_buffer(small, 10)});
  status.assign(reads.size(), errc::success);
  CHECK_FALSE(run_on(io, lane.read(reads, status)));
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
  CHECK_FALSE(run_on(io, lane.write(bad, status)));
  CHECK(status[0] == errc::size_mismatch);
  CHECK(status[1] == errc::invalid_argument);

  lane.detach(8);
  CHECK(lane.rank({8, nullptr}) == ranks::unreachable);
}

TEST_CASE("disk lane: registered memory is read through fixed buffers, registered before or after the ring, past the table, as any memory") {
  scratch s;
  asio::io_context io;
  disk_lane_options o;
  o.fixed_buffer_slots = 3;  // the bounce buffer's and two
  disk_lane lane(io.get_executor(), o);
  constexpr std::size_t n = 256 * 1024;
  aligned_memory a(n), b(n), c(n), d(n);
  auto reg = [&](aligned_memory& m, std::unique_ptr<lane_registration>& out) {
    auto region = std::make_unique<registered_region>(m.data(), n, 1);
    REQUIRE_FALSE(lane.register_region(*region, out));
    return region;
  };
  std::unique_ptr<lane_registration> ra, rb, rc, rd;
  auto region_a = reg(a, ra);  // before the ring exists: installed when it does
  std::error_code ec;
  auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(s.dir / "f", 1 << 20, ec));
  REQUIRE_FALSE(ec);
  REQUIRE_FALSE(lane.attach(1, file));
  if (!lane.fixed_buffer_table()) {
    MESSAGE("no table of fixed buffers here (Linux before 5.19, or RLIMIT_MEMLOCK): nothing to check");
    return;
  }
  // Written from registered memory: through its fixed buffer too.
  const auto value = random_bytes(n, 99);
  std::memcpy(a.data(), value.data(), n);
  std::vector<write_request> w{{{1, 1, 0, n}, asio::const_buffer(a.data(), n), ra.get()}};
  std::vector<errc> status(1);
  REQUIRE_FALSE(run_on(io, lane.write(w, status)));
  REQUIRE(status[0] == errc::success);
  CHECK(lane.stats().fixed_pieces == 1);

  auto read_into = [&](aligned_memory& m, const lane_registration* r) {
    std::memset(m.data(), 0, n);
    std::vector<read_request> rq{{{1, 1, 0, n}, asio::mutable_buffer(m.data(), n), r}};
    std::vector<errc> st(1);
    const auto before = lane.stats().fixed_pieces;
    REQUIRE_FALSE(run_on(io, lane.read(rq, st)));
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
  scratch s;
  std::error_code ec;
  auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(s.dir / "a", 1 << 20, ec));
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
  scratch s;
  asio::io_context io;
  disk_lane lane(io.get_executor());
  std::error_code ec;
  auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(s.dir / "a", 16 << 20, ec));
  REQUIRE_FALSE(ec);
  REQUIRE_FALSE(lane.attach(1, file));
  const auto data = random_bytes(16 << 20, 3);
  std::vector<write_request> writes;
  for (std::size_t i = 0; i < 16; ++i)
    writes.push_back({{1, 1, i << 20, 1 << 20}, asio::const_buffer(&data[i << 20], 1 << 20)});
  std::vector<errc> status(16);
  REQUIRE_FALSE(run_on(io, lane.write(writes, status)));

  int cancelled_batches = 0;
  for (int round = 0; round < 20; ++round) {
    aligned_memory back(16 << 20);
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
