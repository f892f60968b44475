// The io_uring queue on an Asio executor: batches larger than the ring,
// cancellation that waits for the kernel's answer, several threads at once.
// Part of corokv_disk_tests (tests/disk/main.cpp: skipped where io_uring is
// refused).

#include <corokv/io/uring_queue.hpp>

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
using namespace std::chrono_literals;

TEST_SUITE("disk") {

TEST_CASE("uring queue: a batch larger than the ring writes and reads a file, the io_context then runs out of work") {
  test::scratch_dir s(test::disk_backed_tmp);
  const auto path = s.path / "f";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
  REQUIRE(fd >= 0);
  asio::io_context io;
  std::error_code ec;
  auto q = io::uring_queue::open(io.get_executor(), {8}, ec);
  REQUIRE_FALSE(ec);
  constexpr std::size_t n = 100, len = 1000;
  const auto data = test::random_bytes(n * len, 1);
  std::vector<io::uring_request> writes(n);
  for (std::size_t i = 0; i < n; ++i)
    writes[i] = {io::uring_request::kind::write, fd, false, -1, const_cast<std::byte*>(&data[i * len]), len, i * len, 0};
  CHECK_FALSE(test::run_to_completion(io, q->run(writes)));
  for (auto& w : writes) CHECK(w.result == static_cast<int>(len));
  std::vector<std::byte> back(n * len);
  std::vector<io::uring_request> reads(n);
  for (std::size_t i = 0; i < n; ++i)
    reads[i] = {io::uring_request::kind::read, fd, false, -1, &back[i * len], len, i * len, 0};
  io::uring_request sync{io::uring_request::kind::fsync, fd};
  reads.push_back(sync);
  CHECK_FALSE(test::run_to_completion(io, q->run(reads)));
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
  test::scratch_dir s(test::disk_backed_tmp);
  const int fd = ::open((s.path / "f").c_str(), O_RDWR | O_CREAT, 0600);
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
  test::scratch_dir s(test::disk_backed_tmp);
  const int fd = ::open((s.path / "f").c_str(), O_RDWR | O_CREAT, 0600);
  const auto data = test::random_bytes(1 << 20, 2);
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

}  // TEST_SUITE
