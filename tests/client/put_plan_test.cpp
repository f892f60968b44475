// The store's put decisions without I/O: the put plan driven step by step as
// the store's coroutine drives it (register, reserve, write, commit,
// revoke), with the outcomes a metadata endpoint and a transport could
// give, and each step failing in turn (tests/support/step_failure.hpp).

#include <corokv/client/put_plan.hpp>

#include "../support/step_failure.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

using namespace corokv;
using client::put_plan;

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

namespace {

// What a put did, as the service and the caller saw it.
struct put_outcome {
  std::vector<put_plan::step> steps;
  std::error_code error;
  std::vector<errc> results;
  std::set<std::string> reserved, committed, revoked;
};

// Four keys, three of them valid, one refused room by the service; an
// unregistered writer; one replica write of "b" fails. Each step answered
// as the service and the transport would, unless `f` fails it.
put_outcome put_with(test::step_failure& f) {
  writer w({"a", "b", "full", "c"}, {"1", "22", "333", "4444"});
  w.plan.start(w.keys, w.buffers, false);
  put_outcome out;
  for (;;) {
    const auto s = w.plan.next(f.cancelled());
    if (s == put_plan::step::done) break;
    out.steps.push_back(s);
    const bool fails = f.fails();
    const std::error_code failure = fails ? std::error_code(errc::rpc_failed) : std::error_code{};
    switch (s) {
      case put_plan::step::register_node:
        w.plan.on_registered(failure);
        break;
      case put_plan::step::reserve:
        if (fails) {
          w.plan.on_reserved(failure);
          break;
        }
        w.reserve(2, {errc::success, errc::success, errc::no_space});
        for (std::size_t k = 0; k < w.plan.reserve_keys().size(); ++k)
          if (w.plan.reservations()[k].ok()) out.reserved.emplace(w.plan.reserve_keys()[k]);
        break;
      case put_plan::step::write: {
        auto status = w.plan.write_status();
        std::fill(status.begin(), status.end(), errc::success);
        for (std::size_t i = 0; i < w.plan.writes().size(); ++i)
          if (w.plan.writes()[i].source.data() == w.buffers[1].data()) status[i] = errc::transfer_failed;
        w.plan.on_written(fails ? std::error_code(errc::transfer_failed) : std::error_code{});
        break;
      }
      case put_plan::step::commit:
        if (!fails)
          for (std::size_t c = 0; c < w.plan.commit_keys().size(); ++c) {
            CHECK(w.plan.commit_status()[c] == errc::success);
            out.committed.emplace(w.plan.commit_keys()[c]);
          }
        w.plan.on_committed(failure);
        break;
      case put_plan::step::revoke:
        for (auto k : w.plan.revoke_keys()) out.revoked.emplace(k);
        w.plan.on_revoked(failure);
        break;
      case put_plan::step::done:
        break;
    }
  }
  out.error = w.plan.error();
  out.results = w.plan.take_results();
  return out;
}

}  // namespace

TEST_CASE("put plan: each step failing in turn, or cancelled at it: it ends, and every reservation is committed or revoked") {
  const auto steps = test::fail_each_step(
      put_with,
      [](const put_outcome& o, const test::step_failure& f) {
        REQUIRE(o.results.size() == 4);
        // Nothing is left reserved: each reservation was committed or a
        // put_revoke was issued for it (best effort: the put timeout ends
        // what a failed revoke leaves).
        for (const auto& k : o.reserved) CHECK_MESSAGE((o.committed.count(k) + o.revoked.count(k)) >= 1, k);
        for (const auto& k : o.committed) CHECK_MESSAGE(o.revoked.count(k) == (o.error ? 1u : 0u), k);
        if (o.error) {
          // A failure or a cancellation failed the operation as a whole:
          // nothing of it stays, what was committed is revoked too.
          REQUIRE(f.failed_any());
          if (f.how() == test::step_fault::cancelled)
            CHECK(o.error == errc::cancelled);
          else
            CHECK((o.error == errc::rpc_failed || o.error == errc::transfer_failed));
          for (const auto& k : o.reserved) CHECK_MESSAGE(o.revoked.count(k) == 1, k);
          return;
        }
        CHECK(o.results == std::vector<errc>{errc::success, errc::transfer_failed, errc::no_space, errc::success});
        CHECK(o.committed == std::set<std::string>{"a", "c"});
        CHECK(o.revoked == std::set<std::string>{"b"});
        // Only the last step, the revoke of "b", may fail or be cancelled
        // without failing the put: it is best effort, the commit stands.
        if (f.failed_any()) CHECK(f.failing_step() == 4);
      },
      {test::step_fault::error, test::step_fault::cancelled});
  CHECK(steps == 5);  // register, reserve, write, commit, revoke
}

