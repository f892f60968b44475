#pragma once
// Shared pieces of the store tests: running coroutines to completion, a
// store on a hand-driven clock, value patterns, and a transport that delays.

#include <corokv/embedded.hpp>

#include <boost/asio/as_tuple.hpp>
#include "run.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace corokv::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Bytes of the value stored under key number `i`: distinct per key and tag.
inline std::string value_for(std::size_t i, std::size_t size, char tag = 'v') {
  std::string v(size, '\0');
  for (std::size_t b = 0; b < size; ++b) v[b] = static_cast<char>(tag + (i * 31 + b) % 61);
  return v;
}

// Keys prefix0, prefix1, ... and distinct values for them.
inline std::vector<std::string> keys_of(const std::string& prefix, std::size_t n) {
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < n; ++i) keys.push_back(prefix + std::to_string(i));
  return keys;
}
inline std::vector<std::string> values_of(std::size_t n, std::size_t size, char tag = 'v') {
  std::vector<std::string> values;
  for (std::size_t i = 0; i < n; ++i) values.push_back(value_for(i, size, tag));
  return values;
}

inline std::vector<asio::const_buffer> const_buffers(const std::vector<std::string>& values) {
  std::vector<asio::const_buffer> out;
  for (auto& v : values) out.push_back(asio::buffer(v));
  return out;
}

inline std::vector<asio::mutable_buffer> mutable_buffers(std::vector<std::string>& storage) {
  std::vector<asio::mutable_buffer> out;
  for (auto& s : storage) out.push_back(asio::buffer(s));
  return out;
}

// This process's segment registry of an embedded store's transport: a
// store built with local_transport(memcpy_lane(it)) reads that store's
// segments by memcpy.
inline std::shared_ptr<memory::segment_registry> process_segments(local_transport& t) {
  return t.lane<memcpy_lane>().shared_registry();
}

// A transport that forwards everything to a local_transport; test doubles
// derive from it and replace what they change.
class forwarding_transport {
 public:
  forwarding_transport() : forwarding_transport(std::make_shared<memory::segment_registry>()) {}
  explicit forwarding_transport(std::shared_ptr<memory::segment_registry> registry) : inner_(memcpy_lane(std::move(registry))) {}

  local_transport& inner() noexcept { return inner_; }
  std::pair<std::error_code, segment_endpoints> add_segment(segment_id id, std::uint64_t size, bool populate) {
    return inner_.add_segment(id, size, populate);
  }
  void remove_segment(segment_id id) { inner_.remove_segment(id); }
  std::error_code register_buffer(asio::mutable_buffer region) { return inner_.register_buffer(region); }
  std::error_code unregister_buffer(asio::mutable_buffer region) { return inner_.unregister_buffer(region); }
  std::size_t registered_buffers() const { return inner_.registered_buffers(); }
  asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    return inner_.read(requests, status);
  }
  asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    return inner_.write(requests, status);
  }
  std::vector<lane_counters> counters_by_lane() const { return inner_.counters_by_lane(); }

 private:
  local_transport inner_;
};
static_assert(data_transport<forwarding_transport>);

inline std::shared_ptr<memory::segment_registry> process_segments(forwarding_transport& t) {
  return process_segments(t.inner());
}

// A local transport whose reads first wait `delay` on a timer and then run
// an optional hook (which may change the store underneath the read). The
// wait either honours cancellation (the read then copies nothing and reports
// cancelled) or ignores it, as hardware that cannot abort a transfer would.
class delayed_transport : public forwarding_transport {
 public:
  struct state {
    std::chrono::milliseconds delay{0};
    bool honour_cancellation = true;
    std::function<asio::awaitable<void>()> before_copy;
    std::atomic<int> in_flight{0};
    std::atomic<int> copies_done{0};
    std::atomic<int> reads_cancelled{0};
  };

  explicit delayed_transport(std::shared_ptr<memory::segment_registry> registry = std::make_shared<memory::segment_registry>())
      : forwarding_transport(std::move(registry)), state_(std::make_shared<state>()) {}

  state& control() const { return *state_; }

  asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    state& s = *state_;
    ++s.in_flight;
    asio::steady_timer timer(co_await asio::this_coro::executor, s.delay);
    boost::system::error_code waited;
    if (s.honour_cancellation) {
      std::tie(waited) = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    } else {
      asio::cancellation_slot none;  // an empty slot: this wait cannot be cancelled
      std::tie(waited) = co_await timer.async_wait(asio::bind_cancellation_slot(none, asio::as_tuple(asio::use_awaitable)));
    }
    if (waited) {
      ++s.reads_cancelled;
      --s.in_flight;
      co_return errc::cancelled;
    }
    if (s.before_copy) co_await s.before_copy();
    std::error_code ec = co_await inner().read(requests, status);
    ++s.copies_done;
    --s.in_flight;
    co_return ec;
  }

 private:
  std::shared_ptr<state> state_;
};
static_assert(data_transport<delayed_transport>);

// A store, its metadata service and its clock, all driven by hand.
template <class Transport = local_transport>
struct store_fixture {
  meta::manual_clock clock;
  std::shared_ptr<meta::service> service;
  asio::io_context io;
  basic_store<embedded_metadata, Transport> store;

  static meta::service_options service_options() {
    meta::service_options o;
    o.id_seed = 1000;
    o.lease_ttl = 5s;
    o.node_ttl = 1h;
    o.high_watermark = 1.0;  // tests fill segments exactly; only failed allocations evict
    return o;
  }
  static store_options client_options(meta::manual_clock& clock, std::size_t cache_capacity) {
    store_options o;
    o.lease_ttl = 5s;
    o.lease_margin = 100ms;
    o.cache_capacity = cache_capacity;
    o.clock = clock.source();
    return o;
  }

  explicit store_fixture(std::size_t cache_capacity = 1024, Transport transport = Transport{})
      : service(std::make_shared<meta::service>(service_options(), clock.source())),
        store(io.get_executor(), embedded_metadata(service), std::move(transport),
              client_options(clock, cache_capacity)) {}

  template <class T>
  T run(asio::awaitable<T> coroutine) {
    return test::run_to_completion(io, std::move(coroutine));
  }

  segment_id add_segment(std::uint64_t size) {
    return run([&]() -> asio::awaitable<segment_id> { co_return co_await store.add_segment(size); }());
  }

  std::vector<errc> put(const std::vector<std::string>& keys, const std::vector<std::string>& values,
                        put_options options = {}) {
    auto buffers = const_buffers(values);
    return run([&]() -> asio::awaitable<std::vector<errc>> {
      co_return co_await store.batch_put(keys, buffers, options);
    }());
  }

  std::vector<query_result> query(const std::vector<std::string>& keys) {
    return run([&]() -> asio::awaitable<std::vector<query_result>> { co_return co_await store.batch_query(keys); }());
  }

  std::uint64_t round_trips() const { return store.counters().metadata_round_trips; }
};

}  // namespace corokv::test
