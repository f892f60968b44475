// The store's batch API on the embedded default: data, the two-step read and
// its round-trip counts, the cache, leases, bad input and completion tokens.

#include "../support/embedded_store.hpp"

#include <boost/asio/deferred.hpp>

namespace asio = boost::asio;
using namespace corokv;
using namespace corokv::test;

TEST_CASE("put, query, get with the query results: the bytes come back, zero metadata round trips") {
  store_fixture<> f;
  f.add_segment(8 << 20);
  auto keys = keys_of("blk-", 16);
  auto values = values_of(16, 64 << 10);
  for (auto e : f.put(keys, values)) REQUIRE(e == errc::success);
  auto q = f.query(keys);
  for (auto& r : q) REQUIRE(r.ok());
  // Client-side deadline: sent_at + ttl - margin, on the store's clock.
  CHECK(q[0].lease_deadline == f.clock.now() + 5s - 100ms);

  std::vector<std::string> out(16, std::string(64 << 10, '\0'));
  auto buffers = mutable_buffers(out);
  const auto before = f.round_trips();
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, q, buffers);
  }());
  CHECK(f.round_trips() - before == 0);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    CHECK(got[i].ok());
    CHECK(got[i].source == key_source::caller);
    CHECK(got[i].size == values[i].size());
    CHECK(got[i].version == q[i].version);
    CHECK(out[i] == values[i]);
  }
  CHECK(f.store.counters().keys_from_caller == 16);
  CHECK(f.store.counters().bytes_read == 16u * (64 << 10));
}

TEST_CASE("expired and missing query results are re-queried together in exactly one round trip") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("k", 4);
  auto values = values_of(4, 1000);
  f.put(keys, values);
  auto q = f.query(keys);
  q[1].lease_deadline = f.clock.now() - 1ms;  // expired
  q[2] = query_result{};                      // never queried (not_found)
  std::vector<std::string> out(4, std::string(1000, '\0'));
  auto buffers = mutable_buffers(out);
  const auto before = f.round_trips();
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, q, buffers);
  }());
  CHECK(f.round_trips() - before == 1);
  CHECK(got[0].source == key_source::caller);
  CHECK(got[1].source == key_source::requery);
  CHECK(got[2].source == key_source::requery);
  CHECK(got[3].source == key_source::caller);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(got[i].ok());
    CHECK(out[i] == values[i]);
  }
}

TEST_CASE("strict mode reports missing and expired query results instead of re-querying") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("k", 3);
  f.put(keys, values_of(3, 100));
  auto q = f.query(keys);
  q[1].lease_deadline = f.clock.now();  // a deadline that has arrived is expired
  q[2] = query_result{};
  std::vector<std::string> out(3, std::string(100, '\0'));
  auto buffers = mutable_buffers(out);
  const auto before = f.round_trips();
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, q, buffers, get_options{.strict = true});
  }());
  CHECK(f.round_trips() - before == 0);
  CHECK(got[0].ok());
  CHECK(got[1].status == errc::lease_expired);
  CHECK(got[2].status == errc::not_found);
}

TEST_CASE("query results of another length fail the whole batch_get with invalid_argument") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("k", 2);
  std::vector<query_result> q(1);
  std::vector<std::string> out(2, std::string(10, '\0'));
  auto buffers = mutable_buffers(out);
  auto [ec, got] = f.run([&]() -> asio::awaitable<std::tuple<boost::system::error_code, std::vector<get_result>>> {
    co_return co_await f.store.batch_get(keys, q, buffers, asio::as_tuple(asio::deferred));
  }());
  CHECK(ec == errc::invalid_argument);
  CHECK(got.empty());
  std::vector<asio::mutable_buffer> one_buffer(1);
  auto [ec2, got2] = f.run([&]() -> asio::awaitable<std::tuple<boost::system::error_code, std::vector<get_result>>> {
    co_return co_await f.store.batch_get(keys, one_buffer, asio::as_tuple(asio::deferred));
  }());
  CHECK(ec2 == errc::invalid_argument);
}

TEST_CASE("batch_get without query results uses the cache: one round trip, then none") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("c", 8);
  auto values = values_of(8, 512);
  f.put(keys, values);
  std::vector<std::string> out(8, std::string(512, '\0'));
  auto buffers = mutable_buffers(out);
  auto get = [&] {
    return f.run([&]() -> asio::awaitable<std::vector<get_result>> {
      co_return co_await f.store.batch_get(keys, buffers);
    }());
  };
  auto before = f.round_trips();
  auto first = get();
  CHECK(f.round_trips() - before == 1);
  for (auto& r : first) CHECK(r.source == key_source::requery);
  before = f.round_trips();
  auto second = get();
  CHECK(f.round_trips() - before == 0);
  for (std::size_t i = 0; i < 8; ++i) {
    CHECK(second[i].source == key_source::cache);
    CHECK(out[i] == values[i]);
  }
  // Past the cached lease, the cache is not trusted.
  f.clock.advance(5s);
  before = f.round_trips();
  auto third = get();
  CHECK(f.round_trips() - before == 1);
  CHECK(third[0].source == key_source::requery);
  CHECK(f.store.counters().keys_from_cache == 8);
}

TEST_CASE("the store's own remove and put invalidate the cache") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"x"};
  f.put(keys, {value_for(1, 100)});
  f.query(keys);  // cached
  auto removed = f.run([&]() -> asio::awaitable<std::vector<errc>> { co_return co_await f.store.batch_remove(keys); }());
  CHECK(removed[0] == errc::success);
  std::vector<std::string> out{std::string(100, '\0')};
  auto buffers = mutable_buffers(out);
  auto get = [&] {
    return f.run([&]() -> asio::awaitable<std::vector<get_result>> {
      co_return co_await f.store.batch_get(keys, buffers);
    }());
  };
  auto before = f.round_trips();
  CHECK(get()[0].status == errc::not_found);  // not served from the stale cache entry
  CHECK(f.round_trips() - before == 1);

  f.clock.advance(6s);  // the removed object's lease ends; a new object takes the key
  f.service->maintain();
  f.put(keys, {value_for(2, 100)});
  auto got = get();
  CHECK(got[0].ok());
  CHECK(out[0] == value_for(2, 100));
}

TEST_CASE("remove_all hides every object and empties the store's cache") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("all", 5);
  f.put(keys, values_of(5, 100));
  auto leased = f.query(keys);  // cached, and leased
  REQUIRE(leased[0].ok());
  auto cleared = f.run([&]() -> asio::awaitable<std::uint64_t> { co_return co_await f.store.remove_all(); }());
  CHECK(cleared == 5);
  CHECK(f.store.cache().size() == 0);
  std::vector<std::string> out(5, std::string(100, '\0'));
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await f.store.batch_get(keys, buffers); }());
  for (auto& g : got) CHECK(g.status == errc::not_found);
  // The caller's own query results still read the old bytes while the
  // leases hold (the memory is not reused), as after batch_remove.
  CHECK(f.service->stats().removed_leased == 5);
  auto by_lease = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, leased, buffers);
  }());
  for (auto& g : by_lease) CHECK(g.ok());
  CHECK(out == values_of(5, 100));
  auto again = f.run([&]() -> asio::awaitable<std::uint64_t> { co_return co_await f.store.remove_all(); }());
  CHECK(again == 0);
}

TEST_CASE("the cache is bounded and evicts the least recently used key") {
  store_fixture<> f(4);
  f.add_segment(1 << 20);
  auto keys = keys_of("lru", 6);
  f.put(keys, values_of(6, 64));
  f.query({keys[0], keys[1], keys[2], keys[3]});
  std::vector<std::string> out(1, std::string(64, '\0'));
  auto buffers = mutable_buffers(out);
  std::vector<std::string> k0{keys[0]};
  f.run([&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await f.store.batch_get(k0, buffers); }());
  f.query({keys[4], keys[5]});  // evicts keys 1 and 2, not the recently used key 0
  CHECK(f.store.cache().size() == 4);
  auto probe = [&](const std::string& k) {
    std::vector<std::string> one{k};
    return f.run([&]() -> asio::awaitable<std::vector<get_result>> {
      co_return co_await f.store.batch_get(one, buffers);
    }())[0].source;
  };
  CHECK(probe(keys[0]) == key_source::cache);
  CHECK(probe(keys[3]) == key_source::cache);
  CHECK(probe(keys[1]) == key_source::requery);
}

TEST_CASE("bad input fails only its own key: the rest of the batch proceeds") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  const std::string too_long(max_key_length + 1, 'k');
  std::vector<std::string> keys{"good", "", too_long, "good", "empty-value", "other"};
  std::vector<std::string> values{value_for(0, 100), "x", "x", "x", "", value_for(5, 300)};
  auto put = f.put(keys, values);
  CHECK(put == std::vector<errc>{errc::success, errc::invalid_key, errc::invalid_key, errc::duplicate_key,
                                 errc::invalid_argument, errc::success});

  std::vector<std::string> get_keys{"good", "", "good", "other", "missing"};
  std::vector<std::string> out{std::string(100, '\0'), "", std::string(100, '\0'), std::string(299, '\0'),
                               std::string(10, '\0')};
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(get_keys, buffers);
  }());
  CHECK(got[0].ok());
  CHECK(out[0] == values[0]);
  CHECK(got[1].status == errc::invalid_key);
  CHECK(got[2].status == errc::duplicate_key);
  CHECK(got[3].status == errc::buffer_too_small);  // 299 < 300 bytes
  CHECK(out[3] == std::string(299, '\0'));          // and nothing was written
  CHECK(got[4].status == errc::not_found);
}

TEST_CASE("a query result that does not describe its object fails with size_mismatch") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"a", "b"};
  f.put(keys, {value_for(0, 100), value_for(1, 100)});
  auto q = f.query(keys);
  q[0].size = 50;  // replicas say 100
  std::vector<std::string> out(2, std::string(100, '\0'));
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, q, buffers);
  }());
  CHECK(got[0].status == errc::size_mismatch);
  CHECK(got[1].ok());
}

TEST_CASE("a read that completes after its lease, of an unchanged object, is re-validated and succeeds") {
  store_fixture<delayed_transport> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"slow"};
  f.put(keys, {value_for(0, 4096)});
  auto q = f.query(keys);
  f.store.transport().control().before_copy = [&]() -> asio::awaitable<void> {
    f.clock.advance(6s);  // past the lease
    co_return;
  };
  std::vector<std::string> out{std::string(4096, '\0')};
  auto buffers = mutable_buffers(out);
  const auto before = f.round_trips();
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, q, buffers);
  }());
  CHECK(got[0].ok());
  CHECK(out[0] == value_for(0, 4096));
  CHECK(f.round_trips() - before == 1);  // the validation
  CHECK(f.store.counters().keys_revalidated == 1);
  CHECK(f.store.counters().lease_expiries == 0);
}

TEST_CASE("a late read whose object was removed and its space reused never returns the other bytes as success") {
  store_fixture<delayed_transport> f;
  f.add_segment(4096);  // room for exactly one object: the new one must reuse the old bytes
  std::vector<std::string> keys{"victim"};
  f.put(keys, {value_for(0, 4096, 'a')});
  auto q = f.query(keys);
  const std::uint64_t old_offset = q[0].replicas[0].offset;

  // Another client in the same process, sharing the service and the memory.
  basic_store<embedded_metadata, local_transport> other(
      f.io.get_executor(), embedded_metadata(f.service), local_transport(memcpy_lane(process_segments(f.store.transport()))),
      store_options{.clock = f.clock.source()});
  std::vector<std::string> other_keys{"intruder"};
  std::vector<std::string> other_values{value_for(9, 4096, 'z')};
  auto other_buffers = const_buffers(other_values);
  std::vector<errc> intruder_put;

  f.store.transport().control().before_copy = [&]() -> asio::awaitable<void> {
    f.clock.advance(6s);  // the lease ends while the read is in flight...
    auto removed = co_await other.batch_remove(keys);  // ...the object is removed...
    CHECK(removed[0] == errc::success);
    intruder_put = co_await other.batch_put(other_keys, other_buffers);  // ...and its space reused
  };
  std::vector<std::string> out{std::string(4096, '\0')};
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    co_return co_await f.store.batch_get(keys, q, buffers);
  }());
  REQUIRE(intruder_put.size() == 1);
  REQUIRE(intruder_put[0] == errc::success);
  std::vector<query_result> intruder(1);
  REQUIRE(f.service->query(other_keys, 0s, intruder) == errc::success);
  REQUIRE(intruder[0].ok());
  CHECK(intruder[0].replicas[0].offset == old_offset);  // the same bytes were reused
  CHECK(out[0] == other_values[0]);                     // the copy did read the intruder...
  CHECK(got[0].status == errc::lease_expired);          // ...and it is not reported as good
  CHECK_FALSE(got[0].ok());
  CHECK(f.store.counters().lease_expiries == 1);
}

TEST_CASE("exist, exist_prefix and remove answer per key") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto chain = keys_of("p", 4);
  f.put({chain[0], chain[1], chain[3]}, values_of(3, 64));
  auto [exist, prefix, removed] = f.run(
      [&]() -> asio::awaitable<std::tuple<std::vector<errc>, prefix_result, std::vector<errc>>> {
        auto e = co_await f.store.batch_exist(chain);
        auto p = co_await f.store.batch_exist_prefix(chain);
        std::vector<std::string> gone{chain[0], "never", chain[0]};
        auto r = co_await f.store.batch_remove(gone);
        co_return std::tuple{e, p, r};
      }());
  CHECK(exist == std::vector<errc>{errc::success, errc::success, errc::not_found, errc::success});
  CHECK(prefix.matched == 2);
  CHECK(prefix.stopped_by == errc::not_found);
  CHECK(removed == std::vector<errc>{errc::success, errc::not_found, errc::duplicate_key});
}

TEST_CASE("puts spread replicas over segments and every replica holds the value") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"twice"};
  std::vector<std::string> values{value_for(3, 5000)};
  auto put = f.put(keys, values, put_options{2});
  REQUIRE(put[0] == errc::success);
  auto q = f.query(keys);
  REQUIRE(q[0].replicas.size() == 2);
  // Read each replica on its own: drop the other from the query result.
  for (std::size_t which = 0; which < 2; ++which) {
    auto single = q;
    single[0].replicas.erase_if([&](const replica_descriptor& r) { return !(r == q[0].replicas[which]); });
    std::vector<std::string> out{std::string(5000, '\0')};
    auto out_buffers = mutable_buffers(out);
    auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
      co_return co_await f.store.batch_get(keys, single, out_buffers);
    }());
    CHECK(got[0].ok());
    CHECK(out[0] == values[0]);
  }
  // Too many replicas for the segments fails that key.
  auto three = f.run([&]() -> asio::awaitable<std::vector<errc>> {
    std::vector<std::string> k{"thrice"};
    auto b = const_buffers(values);
    co_return co_await f.store.batch_put(k, b, put_options{3});
  }());
  CHECK(three[0] == errc::replicas_unavailable);
}

TEST_CASE("a put without any segment fails per key, and no_space when memory is full") {
  store_fixture<> f;
  std::vector<std::string> keys{"a"};
  CHECK(f.put(keys, {value_for(0, 100)})[0] == errc::replicas_unavailable);
  f.add_segment(4096);
  auto big = f.put({"b", "c"}, {value_for(0, 4096), value_for(1, 4096)});
  CHECK(big[0] == errc::success);
  CHECK(big[1] == errc::no_space);  // b holds the space, still pending while the batch runs
}

TEST_CASE("every completion token works: callback, use_future, as_tuple, use_awaitable, deferred") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"t"};
  f.put(keys, {value_for(0, 10)});

  std::vector<errc> by_callback;
  boost::system::error_code callback_ec = errc::rpc_failed;
  f.store.batch_exist(keys, [&](boost::system::error_code ec, std::vector<errc> r) {
    callback_ec = ec;
    by_callback = std::move(r);
  });
  CHECK(by_callback.empty());  // not invoked from within the initiating function
  f.io.restart();
  f.io.run();
  CHECK_FALSE(callback_ec);
  CHECK(by_callback == std::vector<errc>{errc::success});

  std::future<std::vector<errc>> future = f.store.batch_exist(keys, asio::use_future);
  f.io.restart();
  f.io.run();
  CHECK(future.get() == std::vector<errc>{errc::success});

  auto [ec, tuple_result] = f.run([&]() -> asio::awaitable<std::tuple<boost::system::error_code, std::vector<errc>>> {
    co_return co_await f.store.batch_exist(keys, asio::as_tuple(asio::use_awaitable));
  }());
  CHECK_FALSE(ec);
  CHECK(tuple_result == std::vector<errc>{errc::success});

  auto deferred_op = f.store.batch_exist(keys);  // deferred: nothing happens until it is awaited
  auto deferred_result = f.run([&]() -> asio::awaitable<std::vector<errc>> { co_return co_await std::move(deferred_op); }());
  CHECK(deferred_result == std::vector<errc>{errc::success});

  // A whole-operation error reaches co_await as an exception.
  std::vector<std::string> mismatch_keys{"a", "b"};
  std::vector<asio::const_buffer> one_value(1);
  CHECK_THROWS_AS(f.run([&]() -> asio::awaitable<std::vector<errc>> {
    co_return co_await f.store.batch_put(mismatch_keys, one_value);
  }()),
                  boost::system::system_error);
}

TEST_CASE("two stores in one process share the service: one writes, the other reads its segment") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  basic_store<embedded_metadata, local_transport> reader(
      f.io.get_executor(), embedded_metadata(f.service), local_transport(memcpy_lane(process_segments(f.store.transport()))),
      store_options{.clock = f.clock.source()});
  auto keys = keys_of("shared", 3);
  auto values = values_of(3, 2048);
  f.put(keys, values);
  std::vector<std::string> out(3, std::string(2048, '\0'));
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> {
    auto q = co_await reader.batch_query(keys);
    co_return co_await reader.batch_get(keys, q, buffers);
  }());
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(got[i].ok());
    CHECK(out[i] == values[i]);
  }
  CHECK(reader.counters().keys_from_caller == 3);
}

TEST_CASE("user buffers register once, without overlap") {
  store_fixture<> f;
  std::vector<char> memory(4096);
  CHECK_FALSE(f.store.register_buffer(asio::buffer(memory)));
  CHECK(f.store.register_buffer(asio::buffer(memory.data() + 100, 10)) == errc::invalid_argument);
  CHECK(f.store.register_buffer(asio::mutable_buffer()) == errc::invalid_argument);
  CHECK(f.store.registered_buffers() == 2);  // this region and the store's buffer pool
  CHECK_FALSE(f.store.unregister_buffer(asio::buffer(memory)));
  CHECK(f.store.unregister_buffer(asio::buffer(memory)) == errc::invalid_argument);
}

TEST_CASE("counters read as a struct and as JSON") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  auto keys = keys_of("j", 2);
  f.put(keys, values_of(2, 100));
  f.query(keys);
  auto c = f.store.counters();
  CHECK(c.batches == 3);               // add_segment, put, query
  CHECK(c.metadata_round_trips == 4);  // mount, put_start, put_end, query
  CHECK(c.bytes_written == 200);
  auto j = f.store.counters_json();
  CHECK(j["metadata_round_trips"] == 4);
  CHECK(j["bytes_written"] == 200);
  CHECK(j.contains("metadata_ns_per_batch"));
  CHECK(j.contains("data_ns_per_batch"));
}

TEST_CASE("an idle store sharing a service is not declared dead: a forgotten one registers again") {
  store_fixture<> f;
  f.add_segment(1 << 20);
  basic_store<embedded_metadata, local_transport> idle(
      f.io.get_executor(), embedded_metadata(f.service), local_transport(memcpy_lane(process_segments(f.store.transport()))),
      store_options{.clock = f.clock.source()});
  f.run([&]() -> asio::awaitable<segment_id> { co_return co_await idle.add_segment(1 << 20); }());
  f.clock.advance(2h);  // far beyond node_ttl
  f.service->maintain();
  CHECK(f.service->segments().size() == 2);  // in-process nodes do not expire
  CHECK(f.service->heartbeat(idle.node()) == errc::success);

  // If the service forgets the node anyway (a restart), the next put
  // registers it again instead of failing.
  REQUIRE(f.service->unregister_node(idle.node()) == errc::success);
  std::vector<std::string> keys{"after"};
  std::vector<std::string> values{value_for(0, 100)};
  auto put = f.run([&]() -> asio::awaitable<std::vector<errc>> {
    auto b = const_buffers(values);
    co_return co_await idle.batch_put(keys, b);
  }());
  CHECK(put[0] == errc::success);  // lands in the other store's segment
  CHECK(f.service->heartbeat(idle.node()) == errc::success);
}

namespace {

// An endpoint whose commit fails as a whole, as a lost connection would.
struct failing_commit_metadata : embedded_metadata {
  using embedded_metadata::embedded_metadata;
  result<std::error_code> put_end(key_span, std::span<const version_t>, std::span<errc>) {
    co_return errc::rpc_failed;
  }
};
static_assert(metadata_endpoint<failing_commit_metadata>);

// A transport that throws, as a buggy user-supplied one might.
struct throwing_transport : forwarding_transport {
  asio::awaitable<std::error_code> read(std::span<const read_request>, std::span<errc>) {
    throw std::runtime_error("device on fire");
    co_return std::error_code{};
  }
};
static_assert(data_transport<throwing_transport>);

}  // namespace

TEST_CASE("a commit that fails as a whole revokes every reservation and reports the failure") {
  asio::io_context io;
  auto service = std::make_shared<meta::service>();
  basic_store<failing_commit_metadata, local_transport> st(io.get_executor(), failing_commit_metadata(service),
                                                           local_transport{});
  std::vector<std::string> keys{"a", "b"};
  std::vector<std::string> values{value_for(0, 100), value_for(1, 100)};
  auto buffers = const_buffers(values);
  auto [ec, put] = run_to_completion(io, [&]() -> asio::awaitable<std::tuple<boost::system::error_code, std::vector<errc>>> {
    co_await st.add_segment(1 << 20);
    co_return co_await st.batch_put(keys, buffers, asio::as_tuple(asio::deferred));
  }());
  CHECK(ec == errc::rpc_failed);
  CHECK(service->stats().pending_puts == 0);
  CHECK(service->stats().pool.used == 0);
}

TEST_CASE("an exception inside an operation completes it with an error instead of hanging") {
  asio::io_context io;
  basic_store<embedded_metadata, throwing_transport> st(io.get_executor(), embedded_metadata{}, throwing_transport{});
  std::vector<std::string> keys{"k"};
  std::vector<std::string> values{value_for(0, 10)};
  std::vector<std::string> out{std::string(10, '\0')};
  auto in = const_buffers(values);
  auto bufs = mutable_buffers(out);
  auto [ec, got] = run_to_completion(io, [&]() -> asio::awaitable<std::tuple<boost::system::error_code, std::vector<get_result>>> {
    co_await st.add_segment(1 << 20);
    co_await st.batch_put(keys, in);
    co_return co_await st.batch_get(keys, bufs, asio::as_tuple(asio::deferred));
  }());
  CHECK(ec == errc::internal_error);
  CHECK(got.empty());
}

TEST_CASE("a move-only callback works as a completion token") {
  store_fixture<> f;
  std::vector<std::string> keys{"m"};
  auto owned = std::make_unique<int>(7);
  int seen = 0;
  f.store.batch_exist(keys, [p = std::move(owned), &seen](boost::system::error_code, std::vector<errc>) { seen = *p; });
  f.io.restart();
  f.io.run();
  CHECK(seen == 7);
}
