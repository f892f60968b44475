// The disk tier's demotion pass without I/O: the plan driven step by step,
// each step failing in turn, as disk_tier.hpp drives it.

#include <corokv/client/demotion_plan.hpp>

#include "../support/step_failure.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace corokv;
using client::demotion_plan;
using step = demotion_plan::step;

namespace {

// Three copies of 100, 5000 and 4096 bytes from memory segment 1 to disk
// segment 9, and two released copies.
demotion_work three_copies() {
  demotion_work w;
  const std::uint64_t sizes[] = {100, 5000, 4096};
  std::uint64_t disk_at = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    demotion d;
    d.key = "k" + std::to_string(i);
    d.version = 10 + i;
    d.from = {1, 7, 1000 * i, sizes[i], 10 + i};
    d.to = {9, 7, disk_at, sizes[i], 20 + i};
    disk_at += disk::round_up_to_block(sizes[i]);
    w.copies.push_back(d);
  }
  w.released = {3, 4};
  w.released_through = 77;
  return w;
}

struct aligned {
  std::byte* p;
  explicit aligned(std::uint64_t n) : p(static_cast<std::byte*>(std::aligned_alloc(disk::block_size, n))) {}
  ~aligned() { std::free(p); }
};

// Where a step fails as a whole; none: every step succeeds.
enum class failure { none, buffer, read, write, sync, report };

struct run {
  std::vector<step> steps;
  demotion_plan::tally counts;
  std::error_code error;
  std::vector<errc> reported;  // copied(), as demote_end saw it
  std::vector<version_t> committed;
  disk::index_replay index;
};

// What a finished pass leaves: its counts, error, committed copies and index.
run outcome_of(demotion_plan& plan, run out) {
  out.counts = plan.counts();
  out.error = plan.error();
  for (auto& e : plan.committed()) out.committed.push_back(e.version);
  out.index = disk::replay_index(plan.index_records(), 1 << 20);
  return out;
}

// Drives a pass over `w`: `fail` fails that step as a whole, `key_fails`
// fails one key (transfer_failed) in the step `key_step`, and the service
// refuses the key `refused` (if any).
run drive(const demotion_work& w, failure fail, std::optional<step> key_step = {}, std::size_t failing_key = 0,
          std::optional<std::size_t> refused = {}) {
  demotion_plan plan;
  plan.start(w);
  aligned buffer(std::max<std::uint64_t>(plan.buffer_size(), disk::block_size));
  plan.use_buffer(fail == failure::buffer ? nullptr : buffer.p);
  run out;
  for (step s = plan.next(); s != step::done; s = plan.next()) {
    out.steps.push_back(s);
    auto per_key = [&](std::span<errc> status, std::size_t key_of_request) {
      std::fill(status.begin(), status.end(), errc::success);
      if (key_step == s && key_of_request < status.size()) status[key_of_request] = errc::transfer_failed;
    };
    switch (s) {
      case step::read:
        for (std::size_t k = 0; k < plan.reads().size(); ++k) {
          const auto& r = plan.reads()[k];
          CHECK(r.replica == w.copies[k].from);
          CHECK(reinterpret_cast<std::uintptr_t>(r.destination.data()) % disk::block_size == 0);
          std::memset(r.destination.data(), 'a' + static_cast<int>(k), r.destination.size());
        }
        per_key(plan.read_status(), failing_key);
        plan.on_read(fail == failure::read ? std::error_code(errc::transfer_failed) : std::error_code{});
        break;
      case step::write:
        // Only what was read is written.
        for (const auto& wr : plan.writes()) CHECK(std::find_if(w.copies.begin(), w.copies.end(), [&](const demotion& d) {
                                                     return d.to == wr.replica;
                                                   }) != w.copies.end());
        per_key(plan.write_status(), 0);
        plan.on_written(fail == failure::write ? std::error_code(errc::transfer_failed) : std::error_code{});
        break;
      case step::sync:
        plan.on_synced(fail != failure::sync);
        break;
      case step::report: {
        REQUIRE(plan.report_keys().size() == w.copies.size());  // every copy is reported
        out.reported.assign(plan.copied().begin(), plan.copied().end());
        auto answers = plan.answers();
        std::fill(answers.begin(), answers.end(), errc::success);
        if (refused) answers[*refused] = errc::not_found;
        plan.on_reported(fail == failure::report ? std::error_code(errc::rpc_failed) : std::error_code{});
        break;
      }
      case step::offer:
      case step::done:
        break;
    }
  }
  return outcome_of(plan, std::move(out));
}

// A pass over `w` driven through test::fail_each_step: the step `f` names
// fails as a whole (a read or write error, a flush that failed, demote_end
// lost); the service refuses the last copy.
run drive_failing(const demotion_work& w, test::step_failure& f) {
  demotion_plan plan;
  plan.start(w);
  aligned buffer(std::max<std::uint64_t>(plan.buffer_size(), disk::block_size));
  plan.use_buffer(buffer.p);
  run out;
  for (step s = plan.next(); s != step::done; s = plan.next()) {
    out.steps.push_back(s);
    const bool fails = f.fails();
    const std::error_code failure = fails ? std::error_code(errc::transfer_failed) : std::error_code{};
    switch (s) {
      case step::read:
        for (const auto& r : plan.reads()) std::memset(r.destination.data(), 'r', r.destination.size());
        std::fill(plan.read_status().begin(), plan.read_status().end(), errc::success);
        plan.on_read(failure);
        break;
      case step::write:
        std::fill(plan.write_status().begin(), plan.write_status().end(), errc::success);
        plan.on_written(failure);
        break;
      case step::sync:
        plan.on_synced(!fails);
        break;
      case step::report: {
        out.reported.assign(plan.copied().begin(), plan.copied().end());
        auto answers = plan.answers();
        std::fill(answers.begin(), answers.end(), errc::success);
        answers.back() = errc::not_found;
        plan.on_reported(fails ? std::error_code(errc::rpc_failed) : std::error_code{});
        break;
      }
      case step::offer:
      case step::done:
        break;
    }
  }
  return outcome_of(plan, std::move(out));
}

}  // namespace

TEST_SUITE("demotion_plan") {

TEST_CASE("demotion plan: a pass copies, flushes and reports every object, and indexes what the service took") {
  const auto w = three_copies();
  const run r = drive(w, failure::none);
  CHECK(r.steps == std::vector<step>{step::read, step::write, step::sync, step::report});
  CHECK(r.reported == std::vector<errc>(3, errc::success));
  CHECK(r.committed == std::vector<version_t>{10, 11, 12});
  CHECK(r.counts.committed == 3);
  CHECK(r.counts.bytes == 100 + 5000 + 4096);
  CHECK_FALSE(r.error);
  // The index: the three copies, with the CRC of the bytes read, and the
  // released versions dropped (records of versions it never listed).
  REQUIRE(r.index.entries.size() == 3);
  CHECK(r.index.records == 5);
  for (const auto& e : r.index.entries) {
    const std::size_t k = e.version - 10;
    std::vector<std::byte> bytes(e.length, static_cast<std::byte>('a' + k));
    CHECK(e.data_crc == disk::crc32c(bytes));
    CHECK(e.offset == w.copies[k].to.offset);
  }
}

TEST_CASE("demotion plan: each step failing as a whole fails every copy, and every copy is still reported") {
  const auto w = three_copies();
  for (failure f : {failure::buffer, failure::read, failure::write, failure::sync}) {
    CAPTURE(static_cast<int>(f));
    const run r = drive(w, f);
    REQUIRE(!r.steps.empty());
    CHECK(r.steps.back() == step::report);
    CHECK(r.reported == std::vector<errc>(3, errc::transfer_failed));
    CHECK(r.counts.failed == 3);
    CHECK(r.counts.committed == 0);
    CHECK(r.committed.empty());
    CHECK(r.index.entries.empty());
    CHECK(r.index.records == 2);  // the released copies are written down all the same
    CHECK_FALSE(r.error);
  }
  // Nothing read: nothing written or flushed.
  CHECK(drive(w, failure::buffer).steps == std::vector<step>{step::report});
  CHECK(drive(w, failure::read).steps == std::vector<step>{step::read, step::report});
  // The report itself fails: the pass fails, nothing is committed.
  const run lost = drive(w, failure::report);
  CHECK(lost.error == errc::rpc_failed);
  CHECK(lost.committed.empty());
  CHECK(lost.index.entries.empty());
  CHECK(lost.index.records == 2);
}

TEST_CASE("demotion plan: one copy failing a read or a write, or refused by the service, is not indexed, the others are") {
  const auto w = three_copies();
  const run read_failed = drive(w, failure::none, step::read, 1);
  CHECK(read_failed.reported == std::vector<errc>{errc::success, errc::transfer_failed, errc::success});
  CHECK(read_failed.committed == std::vector<version_t>{10, 12});
  CHECK(read_failed.counts.failed == 1);
  const run write_failed = drive(w, failure::none, step::write);
  CHECK(write_failed.reported == std::vector<errc>{errc::transfer_failed, errc::success, errc::success});
  CHECK(write_failed.committed == std::vector<version_t>{11, 12});
  const run refused = drive(w, failure::none, {}, 0, 2);
  CHECK(refused.committed == std::vector<version_t>{10, 11});
  CHECK(refused.counts.refused == 1);
  CHECK(refused.index.entries.size() == 2);
}

TEST_CASE("demotion plan: an answer asking for the disk's copies is an offer and nothing else, an empty one is done") {
  demotion_work w = three_copies();
  w.offer_copies = 99;
  const run offer = drive(w, failure::none);
  CHECK(offer.steps == std::vector<step>{step::offer});
  CHECK(offer.committed.empty());
  demotion_work empty;
  empty.released = {5};
  const run nothing = drive(empty, failure::none);
  CHECK(nothing.steps.empty());
  CHECK(nothing.index.records == 1);
}

TEST_CASE("demotion plan: each step failing in turn: the pass ends, every copy is reported, only what the service took is indexed") {
  const auto w = three_copies();
  const auto steps = test::fail_each_step(
      [&](test::step_failure& f) { return drive_failing(w, f); },
      [&](const run& r, const test::step_failure& f) {
        REQUIRE(!r.steps.empty());
        CHECK(r.steps.back() == step::report);  // every failure still ends in a report
        // Every copy handed out is reported, made or not: the service
        // frees the disk extent of each one that is not there.
        REQUIRE(r.reported.size() == w.copies.size());
        CHECK(r.index.records == 2 + r.index.entries.size());  // the released copies are written down always
        CHECK(r.index.entries.size() == r.committed.size());
        if (!f.failed_any()) {
          CHECK_FALSE(r.error);
          CHECK(r.reported == std::vector<errc>(3, errc::success));
          CHECK(r.committed == std::vector<version_t>{10, 11});  // the last one refused
          CHECK(r.counts.refused == 1);
          return;
        }
        CHECK(r.committed.empty());
        if (f.failing_step() + 1 == r.steps.size()) {
          // demote_end itself lost: nothing is committed, the service's
          // reservations expire.
          CHECK(r.error == errc::rpc_failed);
        } else {
          CHECK_FALSE(r.error);
          CHECK(r.reported == std::vector<errc>(3, errc::transfer_failed));
          CHECK(r.counts.failed == 3);
        }
      },
      {test::step_fault::error});
  CHECK(steps == 4);  // read, write, sync, report
}

}  // TEST_SUITE
