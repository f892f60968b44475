#pragma once
// What the in-process cluster tests share (tests/net, tests/rdma): an
// io_context on its own thread, a restartable master, datasets with values
// derived from their keys, and helpers that put and read them back.

#include <corokv/net/master_server.hpp>
#include <corokv/store.hpp>

#include <boost/asio/deferred.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace cluster_support {

using namespace corokv;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;


// An io_context running on its own thread until destroyed.
struct io_thread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread runner{[this] { io.run(); }};
  ~io_thread() {
    work.reset();
    io.stop();
    runner.join();
  }
  template <class F>
  auto on_thread(F f) {
    std::promise<decltype(f())> p;
    asio::post(io, [&] { p.set_value(f()); });
    return p.get_future().get();
  }
};

// A master on its own thread; restartable on the same port.
struct master_process {
  io_thread thread;
  meta::service_options options;
  std::shared_ptr<meta::service> service;
  std::optional<net::master_server> server;
  std::uint16_t port = 0;

  meta::clock_source clock;

  explicit master_process(meta::service_options o = {}, meta::clock_source c = meta::steady_clock_source())
      : options(o), clock(std::move(c)) {
    start(0);
  }
  ~master_process() { stop(); }
  void start(std::uint16_t p) {
    service = std::make_shared<meta::service>(options, clock);
    thread.on_thread([&] {
      server.emplace(thread.io.get_executor(), service, tcp::endpoint(asio::ip::make_address("127.0.0.1"), p));
      server->start();
      port = server->local_endpoint().port();
      return 0;
    });
  }
  void stop() {
    thread.on_thread([&] {
      if (server) server->stop();
      return 0;
    });
    // The server's coroutines end once their cancelled operations ran.
    std::this_thread::sleep_for(20ms);
    thread.on_thread([&] {
      server.reset();
      return 0;
    });
  }
};

// Runs a deferred operation to completion: (error_code, result).
template <class Op>
auto wait(Op&& op) {
  auto f = std::forward<Op>(op)(asio::use_future);
  using T = decltype(f.get());
  try {
    return std::tuple<boost::system::error_code, T>{boost::system::error_code{}, f.get()};
  } catch (const boost::system::system_error& e) {
    return std::tuple<boost::system::error_code, T>{e.code(), T{}};
  }
}

struct dataset {
  std::vector<std::string> keys;
  std::vector<std::vector<char>> values;
  std::vector<asio::const_buffer> value_buffers;
  dataset(const std::string& prefix, std::size_t n, std::size_t size) {
    for (std::size_t i = 0; i < n; ++i) {
      keys.push_back(prefix + std::to_string(i));
      values.emplace_back(size);
      for (std::size_t b = 0; b < size; ++b) values.back()[b] = static_cast<char>((b * 131 + i * 7) & 0xff);
      value_buffers.push_back(asio::buffer(values.back()));
    }
  }
};

// Reads every key into fresh buffers; returns per-key status and whether
// each successful key's bytes equal the value written.
template <class Store>
std::vector<errc> read_back(Store& kv, const dataset& d, std::vector<bool>* intact = nullptr) {
  std::vector<std::vector<char>> out(d.keys.size(), std::vector<char>(d.values[0].size()));
  std::vector<asio::mutable_buffer> buffers;
  for (auto& b : out) buffers.push_back(asio::buffer(b));
  auto [ec, results] = wait(kv.batch_get(d.keys, buffers, asio::deferred));
  REQUIRE(!ec);
  std::vector<errc> status;
  if (intact) intact->clear();
  for (std::size_t i = 0; i < results.size(); ++i) {
    status.push_back(results[i].status);
    if (intact) intact->push_back(results[i].ok() && out[i] == d.values[i]);
  }
  return status;
}

bool all(const std::vector<errc>& s, errc e) {
  return std::all_of(s.begin(), s.end(), [&](errc x) { return x == e; });
}

// Puts the whole dataset through `kv`; every key must succeed.
template <class Store>
void put_all(Store& kv, const dataset& d) {
  auto [ec, put] = wait(kv.batch_put(d.keys, d.value_buffers, asio::deferred));
  REQUIRE(!ec);
  CHECK(all(put, errc::success));
}

// Reads the whole dataset through `kv`; every key must succeed with the
// bytes written.
template <class Store>
void check_read_back(Store& kv, const dataset& d) {
  std::vector<bool> intact;
  CHECK(all(read_back(kv, d, &intact), errc::success));
  CHECK(std::all_of(intact.begin(), intact.end(), [](bool x) { return x; }));
}

// Threads of this process, as the kernel counts them.
inline std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& task : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

}  // namespace cluster_support
