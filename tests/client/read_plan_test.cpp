// The store's decisions without I/O: the read plan and the put plan driven
// step by step as the store's coroutines drive them, with the outcomes a
// metadata endpoint and a transport could give; and the metadata cache
// refusing answers older than an invalidation. No io_context anywhere.

#include <corokv/client/metadata_cache.hpp>
#include <corokv/client/put_plan.hpp>
#include <corokv/client/read_plan.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;
using detail::put_plan;
using detail::read_plan;

namespace {

const time_point t0 = time_point{} + 1h;

query_result leased(std::uint64_t size, version_t version, time_point deadline, std::size_t replicas = 1) {
  query_result q;
  q.status = errc::success;
  q.size = size;
  q.version = version;
  q.lease_deadline = deadline;
  for (std::size_t r = 0; r < replicas; ++r) q.replicas.push_back({100 + r, 7, 4096 * version, size, version + r});
  return q;
}

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
  CHECK(results[0].source == key_source::caller);
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
    CHECK(results[0].source == key_source::caller);
    CHECK(results[1].source == key_source::requery);
    CHECK(results[1].version == 3);
    CHECK(results[2].status == errc::not_found);
  }
  {
    reader r({"ok", "expired", "missing"});
    r.plan.start(r.keys, t0, get_options{.strict = true});
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
  CHECK(results[0].source == key_source::cache);
  CHECK(results[0].version == 5);
  CHECK(results[1].status == errc::not_found);
  CHECK(results[2].status == errc::invalid_key);
}

TEST_CASE("read plan: into the pool, each key gets a handle of its object's size, and too large fails pool_exhausted") {
  buffer_pool pool(64 << 10);
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

// ------------------------------------------------------------ put plan

namespace {

struct writer {
  std::vector<std::string> keys;
  std::vector<std::string> values;
  std::vector<boost::asio::const_buffer> buffers;
  put_plan plan;

  writer(std::vector<std::string> k, std::vector<std::string> v) : keys(std::move(k)), values(std::move(v)) {
    for (auto& x : values) buffers.push_back(boost::asio::buffer(x));
  }
  // Grants every key `replicas` replicas, except those given a status.
  void reserve(std::size_t replicas, std::vector<errc> statuses = {}) {
    auto out = plan.reservations();
    for (std::size_t k = 0; k < out.size(); ++k) {
      out[k].replicas.clear();
      out[k].status = k < statuses.size() ? statuses[k] : errc::success;
      out[k].version = 10 + k;
      if (!out[k].ok()) continue;
      for (std::size_t r = 0; r < replicas; ++r) {
        replica_descriptor where;
        where.segment = 200 + r;
        where.node = 1;
        where.offset = 64 * k;
        where.length = plan.reserve_sizes()[k];
        out[k].replicas.push_back(where);
      }
    }
    plan.on_reserved({});
  }
  void written(std::vector<errc> status) {
    REQUIRE(plan.write_status().size() == status.size());
    std::copy(status.begin(), status.end(), plan.write_status().begin());
    plan.on_written({});
  }
};

}  // namespace

TEST_CASE("put plan: reserve, write every replica, commit") {
  writer w({"a", "b"}, {"xx", "yyy"});
  w.plan.start(w.keys, w.buffers, true);
  REQUIRE(w.plan.next(false) == put_plan::step::reserve);
  CHECK(w.plan.reserve_sizes()[1] == 3);
  w.reserve(2);
  REQUIRE(w.plan.next(false) == put_plan::step::write);
  REQUIRE(w.plan.writes().size() == 4);  // 2 keys x 2 replicas
  CHECK(w.plan.writes()[1].source.data() == w.buffers[0].data());
  w.written({errc::success, errc::success, errc::success, errc::success});
  REQUIRE(w.plan.next(false) == put_plan::step::commit);
  CHECK(w.plan.commit_keys().size() == 2);
  CHECK(w.plan.commit_versions()[1] == 11);
  w.plan.on_committed({});
  CHECK(w.plan.next(false) == put_plan::step::done);
  CHECK_FALSE(w.plan.error());
  CHECK(w.plan.take_results() == std::vector<errc>{errc::success, errc::success});
  CHECK(w.plan.bytes_written() == 2 * 2 + 2 * 3);
}

TEST_CASE("put plan: an unregistered writer registers first, and node_unknown registers once more, then fails") {
  writer w({"a"}, {"x"});
  w.plan.start(w.keys, w.buffers, false);
  REQUIRE(w.plan.next(false) == put_plan::step::register_node);
  w.plan.on_registered({});
  REQUIRE(w.plan.next(false) == put_plan::step::reserve);
  w.plan.on_reserved(errc::node_unknown);
  REQUIRE(w.plan.next(false) == put_plan::step::register_node);
  w.plan.on_registered({});
  REQUIRE(w.plan.next(false) == put_plan::step::reserve);
  w.plan.on_reserved(errc::node_unknown);
  CHECK(w.plan.next(false) == put_plan::step::done);
  CHECK(w.plan.error() == errc::node_unknown);
}

TEST_CASE("put plan: a failed reservation or replica write fails its key, which is revoked, and the rest commit") {
  writer w({"no-room", "bad-write", "fine"}, {"1", "2", "3"});
  w.plan.start(w.keys, w.buffers, true);
  REQUIRE(w.plan.next(false) == put_plan::step::reserve);
  w.reserve(2, {errc::no_space});
  REQUIRE(w.plan.next(false) == put_plan::step::write);
  REQUIRE(w.plan.writes().size() == 4);
  w.written({errc::success, errc::transfer_failed, errc::success, errc::success});
  REQUIRE(w.plan.next(false) == put_plan::step::commit);
  REQUIRE(w.plan.commit_keys().size() == 1);
  CHECK(w.plan.commit_keys()[0] == "fine");
  w.plan.on_committed({});
  REQUIRE(w.plan.next(false) == put_plan::step::revoke);
  REQUIRE(w.plan.revoke_keys().size() == 1);
  CHECK(w.plan.revoke_keys()[0] == "bad-write");
  CHECK(w.plan.revoke_versions()[0] == 11);
  w.plan.on_revoked({});
  CHECK(w.plan.next(false) == put_plan::step::done);
  CHECK(w.plan.take_results() == std::vector<errc>{errc::no_space, errc::transfer_failed, errc::success});
}

TEST_CASE("put plan: a write failing as a whole, or a cancellation, commits nothing and revokes everything") {
  for (int which = 0; which < 3; ++which) {
    CAPTURE(which);
    writer w({"a", "b"}, {"1", "2"});
    w.plan.start(w.keys, w.buffers, true);
    REQUIRE(w.plan.next(false) == put_plan::step::reserve);
    w.reserve(1);
    if (which == 0) {  // cancelled before the writes: none happens
      REQUIRE(w.plan.next(true) == put_plan::step::revoke);
    } else {
      REQUIRE(w.plan.next(false) == put_plan::step::write);
      if (which == 1) {
        w.plan.on_written(errc::transfer_failed);
        REQUIRE(w.plan.next(false) == put_plan::step::revoke);
      } else {  // cancelled while writing
        w.written({errc::success, errc::success});
        REQUIRE(w.plan.next(true) == put_plan::step::revoke);
      }
    }
    CHECK(w.plan.revoke_keys().size() == 2);
    w.plan.on_revoked({});
    CHECK(w.plan.next(false) == put_plan::step::done);
    CHECK(w.plan.error() == (which == 1 ? errc::transfer_failed : errc::cancelled));
  }
}

TEST_CASE("put plan: a commit failing as a whole revokes what it tried to commit and reports the failure") {
  writer w({"a", "b"}, {"1", "2"});
  w.plan.start(w.keys, w.buffers, true);
  REQUIRE(w.plan.next(false) == put_plan::step::reserve);
  w.reserve(1, {errc::success, errc::put_in_progress});
  REQUIRE(w.plan.next(false) == put_plan::step::write);
  w.written({errc::success});
  REQUIRE(w.plan.next(false) == put_plan::step::commit);
  w.plan.on_committed(errc::rpc_failed);
  REQUIRE(w.plan.next(false) == put_plan::step::revoke);
  REQUIRE(w.plan.revoke_keys().size() == 1);
  CHECK(w.plan.revoke_keys()[0] == "a");
  w.plan.on_revoked(errc::rpc_failed);  // best effort: the put timeout reclaims it
  CHECK(w.plan.next(false) == put_plan::step::done);
  CHECK(w.plan.error() == errc::rpc_failed);
}

TEST_CASE("put plan: bad input fails per key, and a batch with nothing valid needs no step") {
  writer w({"", "empty", "ok", "ok"}, {"x", "", "v", "w"});
  w.plan.start(w.keys, w.buffers, true);
  REQUIRE(w.plan.next(false) == put_plan::step::reserve);
  CHECK(w.plan.reserve_keys().size() == 1);
  w.reserve(1);
  REQUIRE(w.plan.next(false) == put_plan::step::write);
  w.written({errc::success});
  REQUIRE(w.plan.next(false) == put_plan::step::commit);
  w.plan.on_committed({});
  REQUIRE(w.plan.next(false) == put_plan::step::done);
  CHECK(w.plan.take_results() ==
        std::vector<errc>{errc::invalid_key, errc::invalid_argument, errc::success, errc::duplicate_key});
  CHECK(w.plan.touched_keys().size() == 1);

  writer none({"", "e"}, {"x", ""});
  none.plan.start(none.keys, none.buffers, false);
  CHECK(none.plan.next(false) == put_plan::step::done);
  CHECK(none.plan.take_results() == std::vector<errc>{errc::invalid_key, errc::invalid_argument});
}

// ------------------------------------------------------------ cache

TEST_CASE("metadata cache: an answer to a query sent before an invalidation of its key does not enter") {
  metadata_cache cache(16);
  std::vector<std::string> keys{"k", "other"};
  std::vector<query_result> old_answer{leased(10, 1, t0 + 5s), leased(10, 2, t0 + 5s)};
  auto sent = cache.begin_query();                                          // a query goes out
  cache.locked([&](metadata_cache::view& v) { v.invalidate("k"); });        // the store removes and puts "k"
  auto fresh = cache.begin_query();                                         // a later query
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, old_answer, sent); });  // the old answer lands
  cache.end_query(sent);
  cache.locked([&](metadata_cache::view& v) {
    CHECK(v.find("k", t0) == nullptr);       // refused: older than the invalidation
    CHECK(v.find("other", t0) != nullptr);   // untouched keys are stored
  });
  std::vector<query_result> new_answer{leased(10, 3, t0 + 5s), leased(10, 2, t0 + 5s)};
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, new_answer, fresh); });
  cache.end_query(fresh);
  cache.locked([&](metadata_cache::view& v) {
    REQUIRE(v.find("k", t0) != nullptr);
    CHECK(v.find("k", t0)->version == 3);
  });
}

TEST_CASE("metadata cache: with more invalidations in flight than it records, older answers are refused whole") {
  metadata_cache cache(4096);
  auto sent = cache.begin_query();
  cache.locked([&](metadata_cache::view& v) {
    for (int i = 0; i < 2000; ++i) v.invalidate("x" + std::to_string(i));
  });
  std::vector<std::string> keys{"untouched"};
  std::vector<query_result> answer{leased(10, 1, t0 + 5s)};
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, answer, sent); });
  cache.end_query(sent);
  cache.locked([&](metadata_cache::view& v) { CHECK(v.find("untouched", t0) == nullptr); });
  // With no query out any more, the record is cleared: new answers enter.
  auto later = cache.begin_query();
  cache.locked([&](metadata_cache::view& v) { v.store_all(keys, answer, later); });
  cache.end_query(later);
  cache.locked([&](metadata_cache::view& v) { CHECK(v.find("untouched", t0) != nullptr); });
}
