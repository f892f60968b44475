// The store's read decisions without I/O: the read plan driven step by step
// as the store's coroutine drives it, with the outcomes a metadata endpoint
// and a transport could give, and each step failing in turn
// (tests/support/step_failure.hpp). No io_context anywhere.

#include <corokv/client/read_plan.hpp>

#include "../support/query_results.hpp"
#include "../support/step_failure.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;
using client::read_plan;
using test::leased;
using test::t0;

namespace {

struct reader {
  std::vector<std::string> keys;
  std::vector<std::vector<char>> memory;
  std::vector<boost::asio::mutable_buffer> buffers;
  read_plan plan;
  time_point now = t0;

  explicit reader(std::vector<std::string> k, std::size_t buffer_size = 1000) : keys(std::move(k)) {
    for (std::size_t i = 0; i < keys.size(); ++i) memory.emplace_back(buffer_size);
    for (auto& m : memory) buffers.push_back(boost::asio::buffer(m));
  }
  read_plan::step next(bool cancelled = false) {
    return plan.next([&] { return now; }, cancelled);
  }
  // Answers the current transfer pass: status per request.
  void transfer(std::vector<errc> status) {
    REQUIRE(plan.transfer_status().size() == status.size());
    std::copy(status.begin(), status.end(), plan.transfer_status().begin());
    plan.on_transfer({});
  }
};

}  // namespace

TEST_CASE("read plan: valid caller results are read with no metadata step, into the caller's buffers") {
  reader r({"a", "b"});
  std::vector<query_result> given{leased(100, 1, t0 + 5s), leased(200, 2, t0 + 5s)};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  auto reads = r.plan.transfers();
  REQUIRE(reads.size() == 2);
  CHECK(reads[0].replica == given[0].replicas[0]);
  CHECK(reads[0].destination.data() == r.buffers[0].data());
  CHECK(reads[0].destination.size() == 100);  // the object's size, not the buffer's
  CHECK(reads[1].destination.size() == 200);
  r.transfer({errc::success, errc::success});
  CHECK(r.next() == read_plan::step::done);
  CHECK_FALSE(r.plan.error());
  auto results = r.plan.take_results();
  CHECK(results[0].ok());
  CHECK(results[0].source == client::key_source::caller);
  CHECK(results[0].size == 100);
  CHECK(results[1].version == 2);
  CHECK(r.plan.counts().from_caller == 2);
  CHECK(r.plan.counts().bytes == 300);
}

TEST_CASE("read plan: missing and expired results are re-queried together, strict mode reports them instead") {
  std::vector<query_result> given{leased(10, 1, t0 + 5s), leased(10, 2, t0), query_result{}};
  {
    reader r({"ok", "expired", "missing"});
    r.plan.start(r.keys, t0, {});
    r.plan.read_into(r.buffers);
    r.plan.use_results(given);
    REQUIRE(r.next() == read_plan::step::query);
    auto keys = r.plan.query_keys();
    REQUIRE(keys.size() == 2);
    CHECK(keys[0] == "expired");
    CHECK(keys[1] == "missing");
    r.plan.query_results()[0] = leased(10, 3, t0 + 5s);
    r.plan.query_results()[1].status = errc::not_found;
    r.plan.on_query({});
    REQUIRE(r.next() == read_plan::step::transfer);
    CHECK(r.plan.transfers().size() == 2);  // "missing" is not found: nothing to read
    r.transfer({errc::success, errc::success});
    REQUIRE(r.next() == read_plan::step::done);
    auto results = r.plan.take_results();
    CHECK(results[0].source == client::key_source::caller);
    CHECK(results[1].source == client::key_source::requery);
    CHECK(results[1].version == 3);
    CHECK(results[2].status == errc::not_found);
  }
  {
    reader r({"ok", "expired", "missing"});
    r.plan.start(r.keys, t0, client::get_options{.strict = true});
    r.plan.read_into(r.buffers);
    r.plan.use_results(given);
    REQUIRE(r.next() == read_plan::step::transfer);  // no query step at all
    r.transfer({errc::success});
    REQUIRE(r.next() == read_plan::step::done);
    auto results = r.plan.take_results();
    CHECK(results[0].ok());
    CHECK(results[1].status == errc::lease_expired);
    CHECK(results[2].status == errc::not_found);
  }
}

TEST_CASE("read plan: bad input fails its own key before any step") {
  reader r({"", "dup", "dup", "small", "odd"}, 50);
  std::vector<query_result> given(5, leased(40, 1, t0 + 5s));
  given[3] = leased(60, 1, t0 + 5s);  // larger than its 50-byte buffer
  given[4].size = 30;                  // its replicas say 40
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  CHECK(r.plan.transfers().size() == 1);  // only the first "dup"
  r.transfer({errc::success});
  REQUIRE(r.next() == read_plan::step::done);
  auto results = r.plan.take_results();
  CHECK(results[0].status == errc::invalid_key);
  CHECK(results[1].ok());
  CHECK(results[2].status == errc::duplicate_key);
  CHECK(results[3].status == errc::buffer_too_small);
  CHECK(results[4].status == errc::size_mismatch);
}

TEST_CASE("read plan: a failed replica is retried on the next one, and with none left the key keeps its last status") {
  reader r({"two", "one"});
  std::vector<query_result> given{leased(10, 1, t0 + 5s, 2), leased(10, 2, t0 + 5s, 1)};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::transfer_failed, errc::segment_not_found});
  REQUIRE(r.next() == read_plan::step::transfer);
  REQUIRE(r.plan.transfers().size() == 1);
  CHECK(r.plan.transfers()[0].replica == given[0].replicas[1]);
  r.transfer({errc::success});
  REQUIRE(r.next() == read_plan::step::done);
  auto results = r.plan.take_results();
  CHECK(results[0].ok());
  CHECK(results[1].status == errc::segment_not_found);
}

TEST_CASE("read plan: reads that finish after their lease are re-validated, and a changed object fails lease_expired") {
  reader r({"same", "changed", "early"});
  std::vector<query_result> given{leased(10, 1, t0 + 1s), leased(10, 2, t0 + 1s), leased(10, 3, t0 + 9s)};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::success, errc::success, errc::success});
  r.now = t0 + 1s;  // the first two leases ended while reading
  REQUIRE(r.next() == read_plan::step::validate);
  REQUIRE(r.plan.validate_keys().size() == 2);
  CHECK(r.plan.validate_versions()[0] == 1);
  CHECK(r.plan.validate_versions()[1] == 2);
  REQUIRE(r.plan.validate_replicas().size() == 2);
  CHECK(r.plan.validate_replicas()[0] == given[0].replicas[0]);
  CHECK(r.plan.validate_replicas()[1] == given[1].replicas[0]);
  r.plan.validate_status()[0] = errc::success;
  r.plan.validate_status()[1] = errc::version_mismatch;
  r.plan.on_validate({});
  REQUIRE(r.next() == read_plan::step::done);
  auto results = r.plan.take_results();
  CHECK(results[0].ok());
  CHECK(results[1].status == errc::lease_expired);
  CHECK(results[2].ok());
  REQUIRE(r.plan.expired_keys().size() == 1);
  CHECK(r.plan.expired_keys()[0] == "changed");
  CHECK(r.plan.counts().revalidated == 2);
  CHECK(r.plan.counts().expired == 1);
}

TEST_CASE("read plan: a late read is validated against the replica it was read from, not the first one listed") {
  reader r({"retried"});
  std::vector<query_result> given{leased(10, 4, t0 + 1s, 3)};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::transfer_failed});
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::transfer_failed});
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::success});  // the third replica
  r.now = t0 + 2s;
  REQUIRE(r.next() == read_plan::step::validate);
  REQUIRE(r.plan.validate_replicas().size() == 1);
  CHECK(r.plan.validate_replicas()[0] == given[0].replicas[2]);
  CHECK(r.plan.validate_replicas()[0].epoch == 6);
  r.plan.validate_status()[0] = errc::lease_expired;  // the service no longer lists that replica
  r.plan.on_validate({});
  REQUIRE(r.next() == read_plan::step::done);
  CHECK(r.plan.take_results()[0].status == errc::lease_expired);
}

TEST_CASE("read plan: whole-call failures: per key when other keys still read, whole otherwise") {
  std::vector<query_result> given{leased(10, 1, t0 + 5s), query_result{}};
  {
    reader r({"held", "needs-master"});
    r.plan.start(r.keys, t0, {});
    r.plan.read_into(r.buffers);
    r.plan.use_results(given);
    REQUIRE(r.next() == read_plan::step::query);
    r.plan.on_query(errc::rpc_failed);
    REQUIRE(r.next() == read_plan::step::transfer);
    r.transfer({errc::success});
    REQUIRE(r.next() == read_plan::step::done);
    auto results = r.plan.take_results();
    CHECK(results[0].ok());
    CHECK(results[1].status == errc::rpc_failed);
  }
  {
    reader r({"needs-master"});
    r.plan.start(r.keys, t0, {});
    r.plan.read_into(r.buffers);
    r.plan.use_results(std::vector<query_result>{query_result{}});
    REQUIRE(r.next() == read_plan::step::query);
    r.plan.on_query(errc::timeout);
    CHECK(r.next() == read_plan::step::done);
    CHECK(r.plan.error() == errc::timeout);
  }
  {
    reader r({"held", "needs-master"});
    r.plan.start(r.keys, t0, {});
    r.plan.read_into(r.buffers);
    r.plan.use_results(given);
    REQUIRE(r.next() == read_plan::step::query);
    r.plan.on_query(std::make_error_code(std::errc::not_enough_memory));  // not a corokv outcome
    CHECK(r.next() == read_plan::step::done);
    CHECK(r.plan.error() == std::errc::not_enough_memory);
  }
  {
    reader r({"held"});
    const std::vector<query_result> held{leased(10, 1, t0 + 5s)};  // outlives the plan's use of it
    r.plan.start(r.keys, t0, {});
    r.plan.read_into(r.buffers);
    r.plan.use_results(held);
    REQUIRE(r.next() == read_plan::step::transfer);
    r.plan.on_transfer(errc::cancelled);
    CHECK(r.next() == read_plan::step::done);
    CHECK(r.plan.error() == errc::cancelled);
  }
}

TEST_CASE("read plan: cancellation is honoured before a pass, never in the middle of one") {
  reader r({"two"});
  std::vector<query_result> given{leased(10, 1, t0 + 5s, 2)};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  CHECK(r.next(true) == read_plan::step::done);  // before the first pass: nothing read
  CHECK(r.plan.error() == errc::cancelled);

  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::transfer_failed});
  CHECK(r.next(true) == read_plan::step::done);  // the second pass does not start
  CHECK(r.plan.error() == errc::cancelled);
}

TEST_CASE("read plan: the cache is asked with each admitted key and its hash, and hits are copied") {
  reader r({"hit", "miss", ""});
  query_result cached = leased(10, 5, t0 + 5s);
  std::vector<std::string> asked;
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(r.buffers);
  r.plan.use_cache([&](std::string_view key, std::uint64_t hash) -> const query_result* {
    asked.emplace_back(key);
    CHECK(hash == detail::hash_key(key));
    return key == "hit" ? &cached : nullptr;
  });
  cached.version = 99;  // the plan holds its own copy
  CHECK(asked == std::vector<std::string>{"hit", "miss"});
  REQUIRE(r.next() == read_plan::step::query);
  CHECK(r.plan.query_keys().size() == 1);
  r.plan.query_results()[0].status = errc::not_found;
  r.plan.on_query({});
  REQUIRE(r.next() == read_plan::step::transfer);
  r.transfer({errc::success});
  REQUIRE(r.next() == read_plan::step::done);
  auto results = r.plan.take_results();
  CHECK(results[0].source == client::key_source::cache);
  CHECK(results[0].version == 5);
  CHECK(results[1].status == errc::not_found);
  CHECK(results[2].status == errc::invalid_key);
}

TEST_CASE("read plan: into the pool, each key gets a handle of its object's size, and too large fails pool_exhausted") {
  memory::buffer_pool pool(64 << 10);
  reader r({"small", "huge", "failing"});
  std::vector<query_result> given{leased(1000, 1, t0 + 5s), leased(1 << 20, 2, t0 + 5s), leased(500, 3, t0 + 5s)};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(pool);
  r.plan.use_results(given);
  REQUIRE(r.next() == read_plan::step::transfer);
  REQUIRE(r.plan.transfers().size() == 2);
  CHECK(r.plan.transfers()[0].destination.size() == 1000);
  CHECK(pool.used() >= 1500);
  r.transfer({errc::success, errc::transfer_failed});
  REQUIRE(r.next() == read_plan::step::done);
  auto results = r.plan.take_results();
  auto handles = r.plan.take_handles();
  CHECK(results[0].ok());
  CHECK(handles[0].size() == 1000);
  CHECK(results[1].status == errc::pool_exhausted);
  CHECK_FALSE(handles[1]);
  CHECK(results[2].status == errc::transfer_failed);
  CHECK_FALSE(handles[2]);  // a failed key's memory went back at once
  CHECK(pool.used() < 1500);
  handles.clear();
  CHECK(pool.used() == 0);
}

namespace {

// What a read did, as the caller saw it.
struct read_outcome {
  std::vector<read_plan::step> steps;
  std::error_code error;
  std::vector<client::get_result> results;
  std::size_t handles_held = 0;        // non-empty handles the caller got
  std::uint64_t handle_bytes = 0;      // ... their bytes
  std::uint64_t pool_used = 0;         // the pool's bytes out, with those handles held
  std::uint64_t pool_left = 0;         // ... and once the caller let go of them
};

// Three keys into a pool: "given" with the caller's result (two replicas,
// lease until t0 + 1.5 s), "missing" and "gone" re-queried (the service
// knows "missing" and not "gone"). The first replica of "given" fails, so a
// second pass reads its next one; that read ends after its lease, so it is
// re-validated. Every transfer pass takes a second. Steps: query, transfer,
// transfer, validate.
read_outcome read_with(test::step_failure& f) {
  memory::buffer_pool pool(64 << 10);
  reader r({"given", "missing", "gone"});
  query_result absent;
  absent.status = errc::not_found;
  const std::vector<query_result> given{leased(100, 1, t0 + 1500ms, 2), absent, absent};
  r.plan.start(r.keys, t0, {});
  r.plan.read_into(pool);
  r.plan.use_results(given);
  read_outcome out;
  for (;;) {
    const auto s = r.next(f.cancelled());
    if (s == read_plan::step::done) break;
    out.steps.push_back(s);
    const bool fails = f.fails();
    switch (s) {
      case read_plan::step::query:
        if (!fails) {
          REQUIRE(r.plan.query_keys().size() == 2);
          r.plan.query_results()[0] = leased(200, 2, t0 + 10s);
          r.plan.query_results()[1].status = errc::not_found;
        }
        r.plan.on_query(fails ? std::error_code(errc::rpc_failed) : std::error_code{});
        break;
      case read_plan::step::transfer: {
        auto status = r.plan.transfer_status();
        for (std::size_t k = 0; k < status.size(); ++k)
          status[k] = r.plan.transfers()[k].replica == given[0].replicas[0] ? errc::transfer_failed : errc::success;
        r.now += 1s;
        r.plan.on_transfer(fails ? std::error_code(errc::transfer_failed) : std::error_code{});
        break;
      }
      case read_plan::step::validate:
        REQUIRE(r.plan.validate_keys().size() == 1);
        CHECK(r.plan.validate_replicas()[0] == given[0].replicas[1]);
        r.plan.validate_status()[0] = errc::success;
        r.plan.on_validate(fails ? std::error_code(errc::rpc_failed) : std::error_code{});
        break;
      case read_plan::step::done:
        break;
    }
  }
  out.error = r.plan.error();
  out.results = r.plan.take_results();
  {
    const auto handles = r.plan.take_handles();
    for (const auto& h : handles)
      if (h) {
        ++out.handles_held;
        out.handle_bytes += h.size();
      }
    out.pool_used = pool.used();
  }
  out.pool_left = pool.used();
  return out;
}

}  // namespace

TEST_CASE("read plan: each step failing in turn, or cancelled at it: it ends, per-key statuses stand, no pool memory is kept") {
  const auto steps = test::fail_each_step(
      read_with,
      [](const read_outcome& o, const test::step_failure& f) {
        if (o.error) {
          // The operation failed as a whole: the caller holds nothing and
          // every handle went back to the pool.
          REQUIRE(f.failed_any());
          if (f.how() == test::step_fault::cancelled)
            CHECK(o.error == errc::cancelled);
          else
            CHECK((o.error == errc::rpc_failed || o.error == errc::transfer_failed));
          CHECK(o.handles_held == 0);
          CHECK(o.pool_used == 0);
          CHECK(o.pool_left == 0);
          return;
        }
        // Per key: one that stands has its bytes in a handle of its object's
        // size; one that failed has a status and holds no pool memory.
        REQUIRE(o.results.size() == 3);
        std::size_t standing = 0;
        std::uint64_t bytes = 0;
        for (const auto& r : o.results) {
          if (r.ok()) {
            ++standing;
            bytes += r.size;
          } else {
            CHECK(r.status != errc::success);
          }
        }
        CHECK(o.handles_held == standing);
        CHECK(o.handle_bytes == bytes);
        CHECK(o.pool_used >= bytes);
        CHECK(o.pool_left == 0);  // nothing kept for "gone" or for the failed first replica
        CHECK(o.results[2].status != errc::success);  // "gone" never stands
        if (!f.failed_any()) {
          CHECK(standing == 2);
          CHECK(o.results[0].version == 1);
          CHECK(o.results[1].size == 200);
          CHECK(o.results[2].status == errc::not_found);
          CHECK(o.steps == std::vector<read_plan::step>{read_plan::step::query, read_plan::step::transfer,
                                                        read_plan::step::transfer, read_plan::step::validate});
          return;
        }
        // A metadata call that failed while other keys still read fails the
        // keys it was for, per key, and the rest stand.
        REQUIRE(f.how() == test::step_fault::error);
        REQUIRE(f.failing_step() < o.steps.size());
        const auto failed = o.steps[f.failing_step()];
        if (failed == read_plan::step::query) {
          CHECK(o.results[0].ok());
          CHECK(o.results[1].status == errc::rpc_failed);
          CHECK(o.results[2].status == errc::rpc_failed);
        } else {
          REQUIRE(failed == read_plan::step::validate);
          CHECK(o.results[0].status == errc::rpc_failed);  // read after its lease, and not confirmed
          CHECK(o.results[1].ok());
        }
      },
      {test::step_fault::error, test::step_fault::cancelled});
  CHECK(steps == 4);
}

