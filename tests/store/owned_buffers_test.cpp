// batch_get into memory the store owns: per key a handle owning the bytes,
// with the same metadata round trips as the buffer forms, a clear per-key
// error when the pool has no room, every completion token, cancellation,
// late reads, and handles that outlive their operation. Also the cache
// defect: an answer older than the store's own remove and put must not
// enter the cache.

#include "../support/embedded_store.hpp"

#include <boost/asio/deferred.hpp>

#include <cstring>

namespace asio = boost::asio;
using namespace corokv;
using namespace corokv::test;

namespace {

std::string bytes_of(const buffer_handle& h) { return std::string(reinterpret_cast<const char*>(h.data()), h.size()); }

using owned = std::vector<get_buffer_result>;

}  // namespace

TEST_CASE("owned buffers: with query results, every key's bytes come back in a handle, no metadata round trip") {
  store_fixture<> f;
  f.add_segment(8 << 20);
  auto keys = keys_of("blk-", 16);
  auto values = values_of(16, 64 << 10);
  for (auto e : f.put(keys, values)) REQUIRE(e == errc::success);
  auto q = f.query(keys);
  const auto before = f.round_trips();
  auto got = f.run([&]() -> asio::awaitable<owned> { co_return co_await f.store.batch_get(keys, q); }());
  CHECK(f.round_trips() - before == 0);
  REQUIRE(got.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) {
    CHECK(got[i].ok());
    CHECK(got[i].source == key_source::caller);
    CHECK(got[i].version == q[i].version);
    CHECK(got[i].size() == values[i].size());
    CHECK(bytes_of(got[i].buffer) == values[i]);
  }
  CHECK(f.store.pool().used() >= 16u * (64 << 10));
  got.clear();
  CHECK(f.store.pool().used() == 0);  // every handle gave its memory back
}

TEST_CASE("owned buffers: without query results, the cache serves the second read with no round trip") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("c", 8);
  auto values = values_of(8, 700);
  f.put(keys, values);
  auto before = f.round_trips();
  auto first = f.run([&]() -> asio::awaitable<owned> { co_return co_await f.store.batch_get(keys); }());
  CHECK(f.round_trips() - before == 1);
  before = f.round_trips();
  auto second = f.run([&]() -> asio::awaitable<owned> { co_return co_await f.store.batch_get(keys); }());
  CHECK(f.round_trips() - before == 0);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    CHECK(first[i].source == key_source::requery);
    CHECK(second[i].source == key_source::cache);
    CHECK(bytes_of(second[i].buffer) == values[i]);
  }
  CHECK(f.store.counters().keys_from_cache == 8);
}

TEST_CASE("owned buffers: a key that does not fit in the pool fails with pool_exhausted, and the rest proceed") {
  meta::manual_clock clock;
  auto service = std::make_shared<meta::service>(store_fixture<>::service_options(), clock.source());
  asio::io_context io;
  store_options o = store_fixture<>::client_options(clock, 1024);
  o.buffer_pool_size = 256 << 10;
  store kv(io.get_executor(), embedded_metadata(service), local_transport{}, o);
  run_to_completion(io, [&]() -> asio::awaitable<void> {
    co_await kv.add_segment(8 << 20);
    std::vector<std::string> keys{"small", "huge", "also-small", "missing"};
    std::vector<std::string> values{value_for(0, 1000), value_for(1, 1 << 20), value_for(2, 2000)};
    auto buffers = const_buffers(values);
    std::vector<std::string> put_keys(keys.begin(), keys.begin() + 3);
    co_await kv.batch_put(put_keys, buffers);
    auto got = co_await kv.batch_get(keys);
    CHECK(got[0].ok());
    CHECK(bytes_of(got[0].buffer) == values[0]);
    CHECK(got[1].status == errc::pool_exhausted);
    CHECK_FALSE(got[1].buffer);
    CHECK(got[2].ok());
    CHECK(bytes_of(got[2].buffer) == values[2]);
    CHECK(got[3].status == errc::not_found);

    // The pool is full while handles are held, and has room once they go.
    std::vector<std::string> one{"also-small"};
    std::vector<get_buffer_result> held;
    for (int i = 0; i < 200; ++i) {
      auto r = co_await kv.batch_get(one);
      if (!r[0].ok()) {
        CHECK(r[0].status == errc::pool_exhausted);
        break;
      }
      held.push_back(std::move(r[0]));
    }
    CHECK(held.size() < 200);
    held.clear();
    auto again = co_await kv.batch_get(one);
    CHECK(again[0].ok());
  }());
}

TEST_CASE("owned buffers: a store without a pool fails every key of the handle forms, and only those") {
  meta::manual_clock clock;
  asio::io_context io;
  store_options o = store_fixture<>::client_options(clock, 16);
  o.buffer_pool_size = 0;
  store kv(io.get_executor(), embedded_metadata(std::make_shared<meta::service>(store_fixture<>::service_options(), clock.source())),
           local_transport{}, o);
  run_to_completion(io, [&]() -> asio::awaitable<void> {
    co_await kv.add_segment(1 << 20);
    std::vector<std::string> keys{"k"};
    std::vector<std::string> values{value_for(0, 100)};
    auto in = const_buffers(values);
    co_await kv.batch_put(keys, in);
    auto got = co_await kv.batch_get(keys);
    CHECK(got[0].status == errc::pool_exhausted);
    std::vector<std::string> out{std::string(100, '\0')};
    auto buffers = mutable_buffers(out);
    auto into = co_await kv.batch_get(keys, buffers);
    CHECK(into[0].ok());
  }());
  CHECK(kv.registered_buffers() == 0);
}

TEST_CASE("owned buffers: handles outlive their operation and later ones, and even the store (checked by ASan)") {
  std::vector<get_buffer_result> kept;
  std::vector<std::string> values = values_of(4, 5000);
  {
    store_fixture<> f;
    f.add_segment(1 << 20);
    auto keys = keys_of("h", 4);
    f.put(keys, values);
    kept = f.run([&]() -> asio::awaitable<owned> { co_return co_await f.store.batch_get(keys); }());
    // Other operations run, and allocate from the pool, while the handles live.
    for (int i = 0; i < 10; ++i) {
      auto more = f.run([&]() -> asio::awaitable<owned> { co_return co_await f.store.batch_get(keys); }());
      for (std::size_t k = 0; k < 4; ++k) {
        CHECK(more[k].buffer.data() != kept[k].buffer.data());
        CHECK(bytes_of(more[k].buffer) == values[k]);
      }
    }
    for (std::size_t k = 0; k < 4; ++k) CHECK(bytes_of(kept[k].buffer) == values[k]);
    kept[0].buffer.release();  // given back while the store runs
    CHECK_FALSE(kept[0].buffer);
  }
  // The store is gone; the handles still own readable bytes.
  for (std::size_t k = 1; k < 4; ++k) CHECK(bytes_of(kept[k].buffer) == values[k]);
  kept.clear();
}

TEST_CASE("owned buffers: every completion token works with the move-only results") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"t"};
  f.put(keys, {value_for(0, 10)});
  auto q = f.query(keys);

  owned by_callback;
  f.store.batch_get(keys, q, [&](boost::system::error_code ec, owned r) {
    CHECK_FALSE(ec);
    by_callback = std::move(r);
  });
  CHECK(by_callback.empty());
  f.io.restart();
  f.io.run();
  REQUIRE(by_callback.size() == 1);
  CHECK(bytes_of(by_callback[0].buffer) == value_for(0, 10));

  std::future<owned> future = f.store.batch_get(keys, asio::use_future);
  f.io.restart();
  f.io.run();
  CHECK(bytes_of(future.get()[0].buffer) == value_for(0, 10));

  auto [ec, tuple_result] = f.run([&]() -> asio::awaitable<std::tuple<boost::system::error_code, owned>> {
    co_return co_await f.store.batch_get(keys, q, asio::as_tuple(asio::use_awaitable));
  }());
  CHECK_FALSE(ec);
  CHECK(tuple_result[0].ok());

  auto deferred_op = f.store.batch_get(keys, get_options{});
  auto deferred_result = f.run([&]() -> asio::awaitable<owned> { co_return co_await std::move(deferred_op); }());
  CHECK(deferred_result[0].ok());

  std::vector<query_result> wrong_length(2);
  auto [ec2, none] = f.run([&]() -> asio::awaitable<std::tuple<boost::system::error_code, owned>> {
    co_return co_await f.store.batch_get(keys, wrong_length, asio::as_tuple(asio::deferred));
  }());
  CHECK(ec2 == errc::invalid_argument);
  CHECK(none.empty());
}

TEST_CASE("owned buffers: a cancelled read completes only after its transfer stopped, and frees every handle") {
  store_fixture<delayed_transport> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"k"};
  f.put(keys, {value_for(0, 100)});
  auto q = f.query(keys);
  auto& control = f.store.transport().control();
  control.delay = 10s;
  asio::cancellation_signal signal;
  boost::system::error_code result_ec;
  int in_flight_at_completion = -1;
  f.store.batch_get(keys, q, asio::bind_cancellation_slot(signal.slot(), [&](boost::system::error_code ec, owned) {
                      result_ec = ec;
                      in_flight_at_completion = control.in_flight;
                    }));
  asio::steady_timer soon(f.io, 20ms);
  soon.async_wait([&](boost::system::error_code) { signal.emit(asio::cancellation_type::terminal); });
  f.io.restart();
  f.io.run();
  CHECK(result_ec == errc::cancelled);
  CHECK(in_flight_at_completion == 0);
  CHECK(f.store.pool().used() == 0);
}

TEST_CASE("owned buffers: a late read of a replaced object is lease_expired and holds no bytes") {
  store_fixture<delayed_transport> f;
  f.add_segment(4096);
  std::vector<std::string> keys{"victim"};
  f.put(keys, {value_for(0, 4096, 'a')});
  auto q = f.query(keys);
  store other(f.io.get_executor(), embedded_metadata(f.service),
              local_transport(memcpy_lane(process_segments(f.store.transport()))),
              store_options{.clock = f.clock.source()});
  std::vector<std::string> other_keys{"intruder"};
  std::vector<std::string> other_values{value_for(9, 4096, 'z')};
  auto other_buffers = const_buffers(other_values);
  f.store.transport().control().before_copy = [&]() -> asio::awaitable<void> {
    f.clock.advance(6s);
    co_await other.batch_remove(keys);
    auto put = co_await other.batch_put(other_keys, other_buffers);
    CHECK(put[0] == errc::success);
  };
  auto got = f.run([&]() -> asio::awaitable<owned> { co_return co_await f.store.batch_get(keys, q); }());
  CHECK(got[0].status == errc::lease_expired);
  CHECK_FALSE(got[0].buffer);
  CHECK(f.store.pool().used() == 0);
}

namespace {

// An endpoint that answers one query at once from the service but holds the
// answer back until released, as a slow network would.
struct holding_metadata : embedded_metadata {
  struct gate {
    bool hold_next = false;
    bool holding = false;
    std::unique_ptr<asio::steady_timer> timer;
  };
  std::shared_ptr<gate> g = std::make_shared<gate>();

  using embedded_metadata::embedded_metadata;
  holding_metadata(holding_metadata&&) noexcept = default;

  result<std::error_code> query(key_span keys, duration ttl, std::span<query_result> out) {
    std::error_code ec = co_await embedded_metadata::query(keys, ttl, out);
    if (g->hold_next) {
      g->hold_next = false;
      g->holding = true;
      g->timer = std::make_unique<asio::steady_timer>(co_await asio::this_coro::executor, std::chrono::hours(1));
      co_await g->timer->async_wait(asio::as_tuple(asio::use_awaitable));
      g->holding = false;
    }
    co_return ec;
  }
  void release() {
    if (g->timer) g->timer->cancel();
  }
};
static_assert(metadata_endpoint<holding_metadata>);

}  // namespace

TEST_CASE("the cache refuses a query answer older than the store's own remove and put of its key") {
  meta::manual_clock clock;
  auto service = std::make_shared<meta::service>(store_fixture<>::service_options(), clock.source());
  asio::io_context io;
  basic_store<holding_metadata, local_transport> kv(io.get_executor(), holding_metadata(service), local_transport{},
                                                    store_fixture<>::client_options(clock, 1024));
  std::vector<std::string> keys{"k"};
  std::vector<std::string> old_value{value_for(1, 1000, 'o')}, new_value{value_for(2, 1000, 'n')};
  run_to_completion(io, [&]() -> asio::awaitable<void> {
    co_await kv.add_segment(1 << 20);
    auto old_in = const_buffers(old_value);
    co_await kv.batch_put(keys, old_in);
  }());

  // A query is answered with the old object, and its answer is held back...
  kv.metadata().g->hold_next = true;
  bool answered = false;
  kv.batch_query(keys, [&](boost::system::error_code, std::vector<query_result>) { answered = true; });
  run_to_completion(io, [&]() -> asio::awaitable<void> {
    while (!kv.metadata().g->holding) {
      asio::steady_timer tick(io, 1ms);
      co_await tick.async_wait(asio::use_awaitable);
    }
    // ...while this store removes the key and puts a new value under it.
    auto removed = co_await kv.batch_remove(keys);
    CHECK(removed[0] == errc::success);
    auto new_in = const_buffers(new_value);
    auto put = co_await kv.batch_put(keys, new_in);
    CHECK(put[0] == errc::success);
    kv.metadata().release();
  }());
  CHECK(answered);

  // The held answer came last; it must not make the cache serve the old
  // object (its bytes are intact under the lease, but they are stale).
  std::vector<std::string> out{std::string(1000, '\0')};
  auto buffers = mutable_buffers(out);
  const auto before = kv.counters().metadata_round_trips;
  auto got = run_to_completion(io, [&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await kv.batch_get(keys, buffers); }());
  REQUIRE(got[0].ok());
  CHECK(got[0].source == key_source::requery);
  CHECK(kv.counters().metadata_round_trips - before == 1);
  CHECK(out[0] == new_value[0]);
}
