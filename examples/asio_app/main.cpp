// corokv inside an ordinary Asio program.
//
// An io_context runs on a background thread. A "serving engine" coroutine,
// co_spawned on it, stores KV blocks and reads them back while a timer ticks
// on the same io_context. Meanwhile synchronous code on the main thread uses
// the same store through asio::use_future. corokv itself starts no thread.

#include <corokv/embedded.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>

#include <atomic>
#include <thread>

namespace asio = boost::asio;
using namespace corokv;
using namespace std::chrono_literals;

namespace {

asio::awaitable<std::size_t> engine(store& kv, std::vector<std::string> keys) {
  std::vector<std::string> values;
  for (std::size_t i = 0; i < keys.size(); ++i) values.push_back(std::string(16 << 10, static_cast<char>('a' + i)));
  std::vector<asio::const_buffer> in;
  for (auto& v : values) in.push_back(asio::buffer(v));
  co_await kv.batch_put(keys, in);

  const auto leases = co_await kv.batch_query(keys);
  std::vector<std::string> out(keys.size(), std::string(16 << 10, '\0'));
  std::vector<asio::mutable_buffer> bufs;
  for (auto& o : out) bufs.push_back(asio::buffer(o));
  const auto got = co_await kv.batch_get(keys, leases, bufs);

  std::size_t good = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) good += got[i].ok() && out[i] == values[i];
  co_return good;
}

asio::awaitable<void> ticker(std::atomic<int>& ticks) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int i = 0; i < 3; ++i) {
    timer.expires_after(5ms);
    co_await timer.async_wait(asio::use_awaitable);
    ++ticks;
  }
}

}  // namespace

int main() {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });

  store kv(io.get_executor());
  // Synchronous code: wait for the segment through a future.
  const segment_id segment = kv.add_segment(64 << 20, asio::use_future).get();

  std::atomic<int> ticks{0};
  std::vector<std::string> keys{"session-7/layer-0", "session-7/layer-1", "session-7/layer-2", "session-7/layer-3"};
  auto served = asio::co_spawn(io, engine(kv, keys), asio::use_future);
  auto ticked = asio::co_spawn(io, ticker(ticks), asio::use_future);
  const std::size_t good = served.get();
  ticked.get();

  // More synchronous use of the same store while the coroutine world runs.
  const std::vector<errc> present = kv.batch_exist(keys, asio::use_future).get();
  const prefix_result prefix = kv.batch_exist_prefix(keys, asio::use_future).get();

  work.reset();
  runner.join();

  fmt::print("segment {} mounted; engine read back {}/{} blocks intact; timer ticked {} times meanwhile\n", segment,
             good, keys.size(), ticks.load());
  fmt::print("from main(): {}/{} keys exist, prefix match {}\n",
             std::count(present.begin(), present.end(), errc::success), keys.size(), prefix.matched);
  const bool ok = good == keys.size() && prefix.matched == keys.size() && ticks == 3;
  fmt::print("{}\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
