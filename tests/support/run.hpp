#pragma once
// Running a coroutine to its end from a test's own thread: spawned on the
// io_context, which then runs until it is out of work. What the coroutine
// returns is returned; what it throws is rethrown. The one copy of the
// helper every test binary uses (tests/support/README in CONTRIBUTING.md).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <future>
#include <optional>
#include <utility>

namespace corokv::test {

template <class T>
T run_to_completion(boost::asio::io_context& io, boost::asio::awaitable<T> coroutine) {
  auto done = boost::asio::co_spawn(io, std::move(coroutine), boost::asio::use_future);
  io.restart();
  io.run();
  return done.get();
}

// The same, for a coroutine that may never end (a server, a wait on another
// process): the io_context runs until the coroutine ends or `limit` passes.
// True if it ended (what it threw is rethrown), false if time ran out.
template <class Rep, class Period>
bool run_within(boost::asio::io_context& io, boost::asio::awaitable<void> coroutine,
                std::chrono::duration<Rep, Period> limit) {
  auto done = boost::asio::co_spawn(io, std::move(coroutine), boost::asio::use_future);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  io.restart();
  while (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    if (io.run_one_until(deadline) == 0) break;
  if (done.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
  done.get();
  return true;
}

}  // namespace corokv::test
