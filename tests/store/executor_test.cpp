// Where completions run, concurrency, and cancellation (the store's, and
// detail::guarded_spawn's, through which nested work is cancelled).

#include "../support/embedded_store.hpp"

#include <corokv/detail/guarded_spawn.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>

#include <thread>

namespace asio = boost::asio;
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

// ---------------------------------------------------------------- detail::guarded_spawn
// Work spawned onto another strand and awaited, cancelled from the awaiting
// side: the pattern behind issue 22's crash (detail/guarded_spawn.hpp).

namespace {

using spawn_strand = detail::spawn_strand;

spawn_strand strand_of(asio::io_context& io) { return asio::make_strand(asio::any_io_executor(io.get_executor())); }

// Asio keeps up to two freed cancellation handlers per thread for reuse;
// with that cache full, the next one destroyed is freed, where ASan sees a
// later use of it.
void fill_cancellation_memory_cache() {
  asio::cancellation_signal a, b;
  a.slot().assign([](asio::cancellation_type) {});
  b.slot().assign([](asio::cancellation_type) {});
}

// `rounds` times, on one thread: a coroutine on strand `a` awaits work
// spawned by `spawn` on strand `b`. The work's last step has the caller's
// cancellation emitted on `a` while its own completion waits in `b`'s queue:
// with a bare co_spawn, the emission queues, on `b` behind that completion,
// a function holding a pointer to the signal in the caller's slot; the
// completion resumes the caller, which clears its slot (destroying the
// signal), and the function then emits through freed memory. Returns how
// many rounds completed with the work's value.
template <class Spawn>
int emit_while_the_work_completes(Spawn spawn, int rounds) {
  asio::io_context io(1);
  const spawn_strand a = strand_of(io), b = strand_of(io);
  int completed = 0;
  for (int r = 0; r < rounds; ++r) {
    asio::cancellation_signal signal;
    auto work = [&]() -> asio::awaitable<int> {
      co_await asio::post(b, asio::use_awaitable);  // from here on `a` is idle
      asio::post(a, [&] {
        signal.emit(asio::cancellation_type::terminal);
        fill_cancellation_memory_cache();
      });
      co_await asio::post(b, asio::use_awaitable);  // `b` now holds this completion ahead of the emission's
      co_return 1;
    };
    auto caller = [&]() -> asio::awaitable<void> {
      co_await asio::this_coro::throw_if_cancelled(false);
      auto op = spawn(b, work());
      completed += co_await std::move(op);
    };
    asio::co_spawn(a, caller(), asio::bind_cancellation_slot(signal.slot(), asio::detached));
    io.restart();
    io.run();
  }
  return completed;
}

}  // namespace

TEST_CASE("guarded_spawn: a cancellation emitted while the work completes on its strand never reaches a freed signal") {
  // With asio::co_spawn(strand, work, use_awaitable) in place of
  // guarded_spawn, this fails under ASan (heap-use-after-free in
  // co_spawn_cancellation_handler's emit) and crashes (SIGSEGV) at -O2.
  const int rounds = 500;
  const int completed = emit_while_the_work_completes(
      [](const spawn_strand& on, asio::awaitable<int> work) {
        return detail::guarded_spawn(on, std::move(work), asio::use_awaitable);
      },
      rounds);
  CHECK(completed == rounds);  // the cancellation came too late for the work: each completed with its value
}

TEST_CASE("guarded_spawn and run_on: a cancellation reaches the waiting work, and run_on keeps the caller's throw_if_cancelled") {
  asio::io_context io(1);
  const spawn_strand elsewhere = strand_of(io);
  auto waits_for_cancellation = [](bool& saw_throw_if_cancelled) -> asio::awaitable<boost::system::error_code> {
    saw_throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    asio::steady_timer long_wait(co_await asio::this_coro::executor, 10s);
    auto [ec] = co_await long_wait.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return ec;
  };

  for (const bool caller_throws : {true, false}) {
    CAPTURE(caller_throws);
    asio::cancellation_signal signal;
    boost::system::error_code waited;
    bool work_throws = !caller_throws;
    auto caller = [&]() -> asio::awaitable<void> {
      co_await asio::this_coro::throw_if_cancelled(caller_throws);
      auto work = waits_for_cancellation(work_throws);
      auto on_strand = detail::run_on(elsewhere, std::move(work));
      waited = co_await std::move(on_strand);
    };
    const auto started = std::chrono::steady_clock::now();
    auto done = asio::co_spawn(io, caller(), asio::bind_cancellation_slot(signal.slot(), asio::use_future));
    asio::steady_timer soon(io, 20ms);
    soon.async_wait([&](boost::system::error_code) { signal.emit(asio::cancellation_type::terminal); });
    io.restart();
    io.run();
    done.get();
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK(waited == asio::error::operation_aborted);
    CHECK(work_throws == caller_throws);
  }

  // Not cancellable (no slot): a plain spawn on the given executor.
  auto on_strand = [&]() -> asio::awaitable<bool> {
    auto check = [](spawn_strand s) -> asio::awaitable<bool> { co_return s.running_in_this_thread(); };
    auto op = detail::guarded_spawn(elsewhere, check(elsewhere), asio::use_awaitable);
    co_return co_await std::move(op);
  };
  CHECK(run_to_completion(io, on_strand()));
}

namespace {

struct spawn_tally {
  std::atomic<int> completed{0}, aborted{0}, wrong{0};
};

// Waits a little (n % 7 * 50 µs); n, or -1 if cancelled.
asio::awaitable<int> short_wait(int n) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::microseconds(n % 7 * 50));
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return ec ? -1 : n;
}

asio::awaitable<void> await_short_wait_elsewhere(asio::any_io_executor ex, int n, spawn_tally& tally) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto op = detail::guarded_spawn(ex, short_wait(n), asio::use_awaitable);
  const int got = co_await std::move(op);
  if (got == -1)
    ++tally.aborted;
  else if (got == n)
    ++tally.completed;
  else
    ++tally.wrong;
}

}  // namespace

TEST_CASE("guarded_spawn: thousands of cancellations at random moments on two threads: every call completes once") {
  asio::io_context io(2);
  spawn_tally tally;
  constexpr std::size_t calls = 2000;
  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;
  std::vector<std::unique_ptr<asio::steady_timer>> timers;
  auto work = asio::make_work_guard(io);
  std::thread first([&] { io.run(); }), second([&] { io.run(); });
  for (std::size_t i = 0; i < calls; ++i) {
    const spawn_strand caller_strand = strand_of(io);
    signals.push_back(std::make_unique<asio::cancellation_signal>());
    asio::co_spawn(caller_strand, await_short_wait_elsewhere(io.get_executor(), static_cast<int>(i), tally),
                   asio::bind_cancellation_slot(signals.back()->slot(), asio::detached));
    // The cancellation, emitted on the caller's strand, at a moment that
    // falls anywhere from before the work waits to after it completed.
    timers.push_back(std::make_unique<asio::steady_timer>(io, std::chrono::microseconds(i % 11 * 30)));
    timers.back()->async_wait(asio::bind_executor(caller_strand, [signal = signals.back().get()](boost::system::error_code) {
      signal->emit(asio::cancellation_type::terminal);
    }));
  }
  work.reset();
  first.join();
  second.join();
  CHECK(tally.completed + tally.aborted == static_cast<int>(calls));
  CHECK(tally.wrong.load() == 0);
  CHECK(tally.completed.load() > 0);
  CHECK(tally.aborted.load() > 0);
  MESSAGE(tally.completed.load() << " completed, " << tally.aborted.load() << " aborted");
}
