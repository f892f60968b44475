// Where completions run, concurrency, and cancellation.

#include "support.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <thread>

using namespace corokv;
using namespace corokv::test;

TEST_CASE("a callback without an executor completes on the store's io_context thread") {
  asio::io_context io;
  store st(io.get_executor());
  std::vector<std::string> keys{"k"};
  bool on_io_thread = false, called = false;
  st.batch_exist(keys, [&](boost::system::error_code ec, std::vector<errc> r) {
    called = !ec && r.size() == 1;
    on_io_thread = io.get_executor().running_in_this_thread();
  });
  std::thread runner([&] { io.run(); });
  runner.join();
  CHECK(called);
  CHECK(on_io_thread);
}

TEST_CASE("on a thread_pool of 4, completions run on the pool") {
  asio::thread_pool pool(4);
  store st(pool.get_executor());
  std::promise<bool> seg_ready;
  st.add_segment(1 << 20, [&](boost::system::error_code ec, segment_id) { seg_ready.set_value(!ec); });
  REQUIRE(seg_ready.get_future().get());
  std::vector<std::string> keys{"a", "b"};
  std::vector<std::string> values{value_for(0, 100), value_for(1, 100)};
  auto buffers = const_buffers(values);
  std::promise<std::pair<bool, bool>> done;
  st.batch_put(keys, buffers, [&](boost::system::error_code ec, std::vector<errc> r) {
    done.set_value({!ec && r[0] == errc::success && r[1] == errc::success, pool.get_executor().running_in_this_thread()});
  });
  auto [ok, on_pool] = done.get_future().get();
  CHECK(ok);
  CHECK(on_pool);
  pool.join();
}

TEST_CASE("a handler bound to a strand runs on that strand, even with the io_context on 4 threads") {
  asio::io_context io;
  store st(io.get_executor());
  auto strand = asio::make_strand(io);
  std::vector<std::string> keys{"k"};
  std::atomic<int> on_strand{0}, handlers{0};
  for (int i = 0; i < 50; ++i)
    st.batch_exist(keys, asio::bind_executor(strand, [&](boost::system::error_code, std::vector<errc>) {
                     ++handlers;
                     if (strand.running_in_this_thread()) ++on_strand;
                   }));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&] { io.run(); });
  for (auto& t : threads) t.join();
  CHECK(handlers == 50);
  CHECK(on_strand == 50);
}

TEST_CASE("hundreds of concurrent batches on a 4-thread io_context keep every key's bytes intact") {
  asio::io_context io;
  store st(io.get_executor(), store_options{.cache_capacity = 512});
  constexpr int writers = 200, keys_per_batch = 8, size = 3000;
  std::atomic<int> wrong{0}, done{0};
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { co_await st.add_segment(64 << 20); }, asio::detached);
  io.run();
  io.restart();
  for (int w = 0; w < writers; ++w) {
    asio::co_spawn(
        io,
        [&st, &wrong, &done, w]() -> asio::awaitable<void> {
          std::vector<std::string> keys, values;
          for (int i = 0; i < keys_per_batch; ++i) {
            keys.push_back("w" + std::to_string(w) + "-" + std::to_string(i));
            values.push_back(value_for(static_cast<std::size_t>(w * keys_per_batch + i), size));
          }
          auto in = const_buffers(values);
          auto put = co_await st.batch_put(keys, in);
          for (auto e : put) wrong += e != errc::success;
          // Read back three ways: through the cache, with query results, and
          // a shared key every batch reads.
          std::vector<std::string> out(keys_per_batch, std::string(size, '\0'));
          auto bufs = mutable_buffers(out);
          auto cached = co_await st.batch_get(keys, bufs);
          auto q = co_await st.batch_query(keys);
          auto leased = co_await st.batch_get(keys, q, bufs);
          for (int i = 0; i < keys_per_batch; ++i)
            wrong += !cached[i].ok() || !leased[i].ok() || out[i] != values[i];
          std::vector<std::string> first{"w0-0"};
          std::vector<std::string> first_out{std::string(size, '\0')};
          auto first_bufs = mutable_buffers(first_out);
          auto shared = co_await st.batch_get(first, first_bufs);
          wrong += shared[0].ok() && first_out[0] != value_for(0, size);
          ++done;
        },
        asio::detached);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&] { io.run(); });
  for (auto& t : threads) t.join();
  CHECK(done == writers);
  CHECK(wrong == 0);
  CHECK(st.counters().keys_from_caller == writers * keys_per_batch);
}

TEST_CASE("cancelled before it starts, batch_get completes with cancelled and writes nothing") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"k"};
  f.put(keys, {value_for(0, 100)});
  auto q = f.query(keys);
  std::vector<std::string> out{std::string(100, '\0')};
  auto buffers = mutable_buffers(out);
  asio::cancellation_signal signal;
  boost::system::error_code result_ec;
  bool completed = false;
  f.store.batch_get(keys, q, buffers,
                    asio::bind_cancellation_slot(signal.slot(), [&](boost::system::error_code ec, std::vector<get_result>) {
                      result_ec = ec;
                      completed = true;
                    }));
  signal.emit(asio::cancellation_type::terminal);
  f.io.restart();
  f.io.run();
  CHECK(completed);
  CHECK(result_ec == errc::cancelled);
  CHECK(out[0] == std::string(100, '\0'));
}

namespace {

// One key stored behind a delayed transport, and a batch_get of it bound to
// a cancellation signal that fires 20 ms after the operation starts.
struct cancellation_case {
  store_fixture<delayed_transport> f;
  std::vector<std::string> keys{"k"};
  std::vector<query_result> q;
  std::vector<std::string> out{std::string(100, '\0')};
  std::vector<asio::mutable_buffer> buffers = mutable_buffers(out);
  asio::cancellation_signal signal;
  delayed_transport::state& control = f.store.transport().control();

  cancellation_case(std::chrono::milliseconds delay, bool honour) {
    f.add_segment(1 << 20);
    f.put(keys, {value_for(0, 100)});
    q = f.query(keys);
    control.delay = delay;
    control.honour_cancellation = honour;
  }

  // Starts the read, cancels it after 20 ms, runs everything to completion.
  // `on_complete` runs inside the completion handler.
  template <class F>
  void run(F on_complete) {
    f.store.batch_get(keys, q, buffers,
                      asio::bind_cancellation_slot(signal.slot(),
                                                   [&, on_complete](boost::system::error_code ec,
                                                                    std::vector<get_result>) { on_complete(ec); }));
    asio::steady_timer soon(f.io, 20ms);
    soon.async_wait([&](boost::system::error_code) {
      CHECK(control.in_flight == 1);  // the read is under way
      signal.emit(asio::cancellation_type::terminal);
    });
    f.io.restart();
    f.io.run();
  }
};

}  // namespace

TEST_CASE("cancelling a batch_get in flight: the transfer stops, then the operation completes") {
  cancellation_case c(10s, true);  // would take long; cancellation ends it
  boost::system::error_code result_ec;
  int in_flight_at_completion = -1;
  const auto started = std::chrono::steady_clock::now();
  c.run([&](boost::system::error_code ec) {
    result_ec = ec;
    in_flight_at_completion = c.control.in_flight;
  });
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(result_ec == errc::cancelled);
  CHECK(in_flight_at_completion == 0);
  CHECK(c.control.reads_cancelled == 1);
  CHECK(c.control.copies_done == 0);
  CHECK(c.out[0] == std::string(100, '\0'));
}

TEST_CASE("a transfer that cannot be aborted is waited for: completion comes only after it stopped writing") {
  cancellation_case c(200ms, false);
  boost::system::error_code result_ec;
  int copies_at_completion = -1, in_flight_at_completion = -1;
  c.run([&](boost::system::error_code ec) {
    result_ec = ec;
    copies_at_completion = c.control.copies_done;
    in_flight_at_completion = c.control.in_flight;
  });
  CHECK(copies_at_completion == 1);  // the copy finished before the handler ran
  CHECK(in_flight_at_completion == 0);
  CHECK(result_ec == errc::cancelled);  // terminal: the caller asked to stop
  CHECK(c.out[0] == value_for(0, 100));  // the one write that happened, happened before completion
}
