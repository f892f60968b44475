// The lane router with a lane of the tests' own, added the way the RDMA and
// disk lanes will be: named in a router's list, with no change to the
// router or the store. It shows that the best lane carries each replica,
// that lanes run in parallel and their statuses come back in order, that
// segments are published to every lane, that register_buffer reaches every
// lane and a region outlives its unregistration while a batch uses it, that
// an unknown segment refreshes the directory once, and that the counters
// say which lane moved what.

#include "../support/embedded_store.hpp"

#include <corokv/transport/lane_router.hpp>
#include <corokv/transport/memcpy_lane.hpp>

#include <doctest/doctest.h>

#include <set>

namespace asio = boost::asio;
using namespace corokv;
using namespace corokv::test;

namespace {

// Reaches the segments it is told to, at the rank it is told, and copies
// through a segment registry like the memcpy lane; records what it is
// given. Optionally holds each read for a while before copying.
class recording_lane {
 public:
  struct registration : memory::lane_registration {
    explicit registration(std::atomic<int>& counter) : live(counter) { ++live; }
    ~registration() override { --live; }
    std::atomic<int>& live;
  };
  struct state {
    std::shared_ptr<memory::segment_registry> memory = std::make_shared<memory::segment_registry>();
    std::set<segment_id> reachable;
    bool reach_all_published = true;
    lane_rank rank = ranks::this_process;
    std::chrono::milliseconds hold{0};
    std::atomic<int> live_registrations{0};
    std::atomic<int> in_flight{0};
    int batches = 0;
    std::size_t requests = 0;
    std::vector<const memory::lane_registration*> registrations_seen;
    std::vector<segment_id> published, withdrawn;
  };

  recording_lane() : state_(std::make_shared<state>()) {}
  state& control() const { return *state_; }

  std::string_view name() const noexcept { return "recording"; }
  lane_rank rank(const segment_route& where) {
    return state_->reachable.count(where.id) ? state_->rank : ranks::unreachable;
  }
  asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    state& s = *state_;
    ++s.batches;
    ++s.in_flight;
    s.requests += requests.size();
    for (auto& r : requests) s.registrations_seen.push_back(r.registration);
    if (s.hold.count()) {
      asio::steady_timer wait(co_await asio::this_coro::executor, s.hold);
      co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    s.memory->with_segments([&](auto& resolve) {
      for (std::size_t k = 0; k < requests.size(); ++k) {
        auto bytes = resolve(requests[k].replica);
        status[k] = bytes.empty() ? errc::segment_not_found : errc::success;
        if (!bytes.empty()) std::memcpy(requests[k].destination.data(), bytes.data(), bytes.size());
      }
    });
    --s.in_flight;
    co_return std::error_code{};
  }
  asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    state& s = *state_;
    ++s.batches;
    s.requests += requests.size();
    s.memory->with_segments([&](auto& resolve) {
      for (std::size_t k = 0; k < requests.size(); ++k) {
        auto bytes = resolve(requests[k].replica);
        status[k] = bytes.empty() ? errc::segment_not_found : errc::success;
        if (!bytes.empty()) std::memcpy(bytes.data(), requests[k].source.data(), bytes.size());
      }
    });
    co_return std::error_code{};
  }
  std::error_code register_region(memory::registered_region&, std::unique_ptr<memory::lane_registration>& out) {
    out = std::make_unique<registration>(state_->live_registrations);
    return {};
  }
  std::error_code publish(const published_segment& segment, segment_endpoints& where) {
    state& s = *state_;
    s.memory->add(segment.id, segment.memory->data(), segment.memory->size(), segment.memory);
    s.published.push_back(segment.id);
    if (s.reach_all_published) s.reachable.insert(segment.id);
    where.rdma_rkey = 0xabcd;  // what a device lane would announce
    return {};
  }
  void withdraw(segment_id id) {
    state_->memory->remove(id);
    state_->withdrawn.push_back(id);
  }

 private:
  std::shared_ptr<state> state_;
};

static_assert(lane<recording_lane>);
static_assert(registering_lane<recording_lane>);
static_assert(publishing_lane<recording_lane>);
static_assert(!directory_following_lane<recording_lane>);

using two_lanes = lane_router<recording_lane, memcpy_lane>;
static_assert(data_transport<two_lanes>);

lane_counters counters_of(const std::vector<lane_counters>& all, std::string_view name) {
  for (auto& c : all)
    if (c.name == name) return c;
  FAIL("no lane named " << name);
  return {};
}

}  // namespace

TEST_CASE("router: a new lane plugs in by its type alone, and the best lane carries each replica, ties to the first listed") {
  store_fixture<two_lanes> f;
  f.add_segment(1 << 20);
  auto& lane = f.store.transport().lane<recording_lane>().control();
  REQUIRE(lane.published.size() == 1);
  // The lane's endpoint data reached the metadata service with the segment.
  CHECK(f.service->segments().at(0).endpoints.rdma_rkey == 0xabcd);

  std::vector<std::string> keys{"a", "b", "c"};
  std::vector<std::string> values{value_for(0, 3000), value_for(1, 5000), value_for(2, 100)};
  for (auto e : f.put(keys, values)) CHECK(e == errc::success);
  auto q = f.query(keys);
  std::vector<std::string> out{std::string(3000, '\0'), std::string(5000, '\0'), std::string(100, '\0')};
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await f.store.batch_get(keys, q, buffers); }());
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(got[i].ok());
    CHECK(out[i] == values[i]);
  }
  // Both lanes rank the segment this_process; the recording lane is listed
  // first, so it carried the put and the get.
  const auto lanes = f.store.counters().lanes;
  CHECK(counters_of(lanes, "recording").batches == 2);
  CHECK(counters_of(lanes, "recording").bytes_read == 8100);
  CHECK(counters_of(lanes, "recording").bytes_written == 8100);
  CHECK(counters_of(lanes, "memcpy").batches == 0);
  auto json = f.store.counters_json();
  CHECK(json["lanes"]["recording"]["bytes_read"] == 8100);
  CHECK(json["lanes"]["memcpy"]["requests"] == 0);
}

TEST_CASE("router: options.lanes leaves the others out of every batch, and a lane it names must exist") {
  router_options only_memcpy;
  only_memcpy.lanes = {"memcpy"};
  store_fixture<two_lanes> f(1024, two_lanes(only_memcpy, recording_lane{}, memcpy_lane{}));
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"a", "b"};
  std::vector<std::string> values{value_for(0, 300), value_for(1, 500)};
  for (auto e : f.put(keys, values)) CHECK(e == errc::success);
  auto q = f.query(keys);
  std::vector<std::string> out{std::string(300, '\0'), std::string(500, '\0')};
  auto buffers = mutable_buffers(out);
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await f.store.batch_get(keys, q, buffers); }());
  CHECK(got[0].ok());
  CHECK(out == values);
  // The recording lane ranks first, but was not allowed.
  const auto lanes = f.store.counters().lanes;
  CHECK(counters_of(lanes, "recording").batches == 0);
  CHECK(counters_of(lanes, "memcpy").bytes_read == 800);

  router_options typo;
  typo.lanes = {"memcopy"};
  CHECK_THROWS_AS(two_lanes(typo, recording_lane{}, memcpy_lane{}), std::invalid_argument);
}

TEST_CASE("router: a batch split over two lanes runs both and puts every status back in request order") {
  store_fixture<two_lanes> f;
  auto& lane = f.store.transport().lane<recording_lane>().control();
  lane.reach_all_published = false;
  const segment_id near = f.add_segment(1 << 20);
  const segment_id far = f.add_segment(1 << 20);
  lane.reachable = {far};  // the recording lane reaches one segment; memcpy both
  lane.rank = ranks::this_process;

  std::vector<std::string> keys;
  std::vector<std::string> values;
  for (int i = 0; i < 16; ++i) {
    keys.push_back("k" + std::to_string(i));
    values.push_back(value_for(static_cast<std::size_t>(i), 1000));
  }
  for (auto e : f.put(keys, values)) CHECK(e == errc::success);  // spread over both segments
  auto q = f.query(keys);
  std::size_t on_far = 0;
  for (auto& r : q) on_far += r.replicas[0].segment == far;
  REQUIRE(on_far > 0);
  REQUIRE(on_far < keys.size());
  (void)near;

  lane.batches = 0;
  std::vector<std::string> out(16, std::string(1000, '\0'));
  auto buffers = mutable_buffers(out);
  const auto before = f.store.counters().lanes;
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await f.store.batch_get(keys, q, buffers); }());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    CHECK(got[i].ok());
    CHECK(out[i] == values[i]);
  }
  const auto after = f.store.counters().lanes;
  CHECK(counters_of(after, "recording").requests - counters_of(before, "recording").requests == on_far);
  CHECK(counters_of(after, "memcpy").requests - counters_of(before, "memcpy").requests == keys.size() - on_far);
  CHECK(lane.batches == 1);  // one call per lane per batch
}

TEST_CASE("router: a replica no lane reaches fails with segment_not_found, and the store tries the next replica") {
  store_fixture<two_lanes> f;
  auto& lane = f.store.transport().lane<recording_lane>().control();
  f.add_segment(1 << 20);
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"twice"};
  std::vector<std::string> values{value_for(3, 2000)};
  auto put = f.put(keys, values, put_options{2});
  REQUIRE(put[0] == errc::success);
  auto q = f.query(keys);
  REQUIRE(q[0].replicas.size() == 2);
  // A replica in a segment nobody knows, then a good one.
  query_result odd = q[0];
  odd.replicas.clear();
  odd.replicas.push_back({424242, 1, 0, 2000});
  odd.replicas.push_back(q[0].replicas[1]);
  std::vector<query_result> given{odd};
  std::vector<std::string> out{std::string(2000, '\0')};
  auto buffers = mutable_buffers(out);
  const auto before = lane.requests;
  auto got = f.run([&]() -> asio::awaitable<std::vector<get_result>> { co_return co_await f.store.batch_get(keys, given, buffers); }());
  CHECK(got[0].ok());
  CHECK(out[0] == values[0]);
  CHECK(lane.requests - before == 1);  // only the reachable replica reached a lane
}

TEST_CASE("router: register_buffer reaches every registering lane, and a region unregistered mid-batch lives until it ends") {
  store_fixture<two_lanes> f;
  auto& lane = f.store.transport().lane<recording_lane>().control();
  CHECK(lane.live_registrations == 1);  // the store's buffer pool
  f.add_segment(1 << 20);
  std::vector<std::string> keys{"r"};
  std::vector<std::string> values{value_for(0, 4096)};
  f.put(keys, values);
  auto q = f.query(keys);

  std::vector<char> region(1 << 16);
  REQUIRE_FALSE(f.store.register_buffer(asio::buffer(region)));
  CHECK(lane.live_registrations == 2);
  CHECK(f.store.registered_buffers() == 2);

  lane.hold = 50ms;
  lane.registrations_seen.clear();
  std::vector<asio::mutable_buffer> buffers{asio::buffer(region.data() + 1000, 4096)};
  bool done = false;
  std::vector<get_result> got;
  f.store.batch_get(keys, q, buffers, [&](boost::system::error_code ec, std::vector<get_result> r) {
    CHECK_FALSE(ec);
    got = std::move(r);
    done = true;
  });
  int live_during = -1;
  asio::steady_timer midway(f.io, 10ms);
  midway.async_wait([&](boost::system::error_code) {
    REQUIRE(lane.in_flight == 1);
    CHECK_FALSE(f.store.unregister_buffer(asio::buffer(region)));
    live_during = lane.live_registrations;  // unregistered, but the batch holds it
  });
  f.io.restart();
  f.io.run();
  CHECK(done);
  REQUIRE(got.size() == 1);
  CHECK(got[0].ok());
  CHECK(std::string(region.data() + 1000, 4096) == values[0]);
  CHECK(live_during == 2);
  CHECK(lane.live_registrations == 1);  // released when the batch ended
  REQUIRE(lane.registrations_seen.size() == 1);
  CHECK(lane.registrations_seen[0] != nullptr);  // the lane got its own registration of the region
  CHECK(f.store.registered_buffers() == 1);
}

TEST_CASE("router: removing a segment withdraws it from every publishing lane") {
  two_lanes router;
  auto [ec, where] = router.add_segment(77, 1 << 16, false);
  REQUIRE_FALSE(ec);
  CHECK(where.rdma_rkey == 0xabcd);
  CHECK(where.base_address != 0);
  CHECK(router.add_segment(77, 1 << 16, false).first == errc::already_exists);
  CHECK(router.lane<memcpy_lane>().registry().contains(77));
  router.remove_segment(77);
  CHECK_FALSE(router.lane<memcpy_lane>().registry().contains(77));
  CHECK(router.lane<recording_lane>().control().withdrawn == std::vector<segment_id>{77});
}

namespace {

// A lane that needs the directory: reaches a segment only if it is listed,
// and hears which segments left the list.
class listed_lane {
 public:
  struct state {
    std::vector<segment_id> forgotten;
  };
  std::shared_ptr<state> s = std::make_shared<state>();
  std::string_view name() const noexcept { return "listed"; }
  lane_rank rank(const segment_route& where) { return where.descriptor ? ranks::tcp : ranks::unreachable; }
  asio::awaitable<std::error_code> read(std::span<const read_request>, std::span<errc> status) {
    std::fill(status.begin(), status.end(), errc::transfer_failed);
    co_return std::error_code{};
  }
  asio::awaitable<std::error_code> write(std::span<const write_request>, std::span<errc> status) {
    std::fill(status.begin(), status.end(), errc::transfer_failed);
    co_return std::error_code{};
  }
  void forget(std::span<const segment_id> gone) { s->forgotten.insert(s->forgotten.end(), gone.begin(), gone.end()); }
};
static_assert(directory_following_lane<listed_lane>);

}  // namespace

TEST_CASE("router: an unknown segment refreshes the directory once per batch, and lanes hear of segments that left") {
  int lists = 0;
  std::vector<segment_descriptor> listing{{5, 1, 4096, {}}, {6, 1, 4096, {}}};
  router_options o;
  o.list_segments = [&]() -> asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>> {
    ++lists;
    co_return std::pair<std::error_code, std::vector<segment_descriptor>>{{}, listing};
  };
  lane_router<listed_lane> router(o, listed_lane{});
  asio::io_context io;
  std::vector<char> into(64);
  auto read = [&](std::vector<segment_id> segments) {
    std::vector<read_request> reads;
    for (auto id : segments) reads.push_back({{id, 1, 0, 64}, asio::buffer(into)});
    std::vector<errc> status(reads.size());
    run_to_completion(io, router.read(reads, status));
    return status;
  };
  auto first = read({5, 6, 9});
  CHECK(lists == 1);  // one refresh for the batch, though 5, 6 and 9 were all unknown
  CHECK(first == std::vector<errc>{errc::transfer_failed, errc::transfer_failed, errc::segment_not_found});
  read({5, 6});
  CHECK(lists == 1);  // known now
  listing.pop_back();  // segment 6 leaves the service
  read({9});
  CHECK(lists == 2);
  CHECK(router.lane<listed_lane>().s->forgotten == std::vector<segment_id>{6});
  CHECK(router.directory().size() == 1);
}
