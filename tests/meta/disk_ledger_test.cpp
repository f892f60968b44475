// meta/disk_ledger.hpp: what the service keeps for the disk tier, without
// a service around it. (tests/meta/tiering_test.cpp drives the same state
// through the service's operations.)

#include <corokv/meta/disk_ledger.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;

namespace {

const time_point t0 = time_point{} + 1h;

disk_copy copy_of(std::string_view key, version_t v, segment_id s) { return {key, v, {s, 1, 0, 4096, 0}}; }

demotion_work tell(meta::disk_ledger& l, segment_id s, std::uint64_t saved_through, std::uint64_t offered = 0,
                   std::size_t max = 100) {
  demotion_work w;
  w.released_through = saved_through;
  l.tell(s, saved_through, offered, w, max);
  return w;
}

}  // namespace

TEST_SUITE("disk_ledger") {

TEST_CASE("released copies are told until acknowledged, at most max per call, and refused if offered") {
  meta::disk_ledger l(1000);
  l.disk_mounted();
  CHECK(l.any_disk());
  l.released(7, 11);
  l.released(7, 12);
  l.released(8, 13);  // another disk
  auto w = tell(l, 7, 0, 0, 1);
  CHECK(w.released == std::vector<version_t>{11});
  const auto first = w.released_through;
  CHECK(first > 1000);  // numbered from the seed: an older master's acknowledgement covers none
  w = tell(l, 7, 0);
  CHECK(w.released == std::vector<version_t>{11, 12});  // not acknowledged: told again
  w = tell(l, 7, first);
  CHECK(w.released == std::vector<version_t>{12});
  CHECK(l.refuses(copy_of("k", 12, 7)));
  CHECK_FALSE(l.refuses(copy_of("k", 13, 7)));  // released on disk 8, not 7
  CHECK(l.refuses(copy_of("k", 13, 8)));
  w = tell(l, 7, w.released_through);
  CHECK(w.released.empty());
  CHECK_FALSE(l.refuses(copy_of("k", 12, 7)));  // written down by the node: forgotten here
}

TEST_CASE("an away disk asks for an offer under a token, a stale token does not end it, the right one does") {
  meta::disk_ledger l(1000);
  l.disk_mounted();
  const segment_id disks[] = {5};
  l.dropped(disks, t0);
  CHECK(l.away() == 1);
  const auto first_token = tell(l, 5, 0).offer_copies;
  CHECK(first_token != 0);
  l.mounted_again(5, t0 + 1s);  // dropped again before its offer ended: a new token
  const auto second_token = tell(l, 5, 0, first_token).offer_copies;
  CHECK(second_token != 0);
  CHECK(second_token != first_token);
  CHECK(l.away() == 1);
  CHECK(tell(l, 5, 0, second_token).offer_copies == 0);  // offered in full: back
  CHECK(l.away() == 0);
}

TEST_CASE("keys changed while a disk is away make its copies of them stale, changes before it went away do not") {
  meta::disk_ledger l(1000);
  l.disk_mounted();
  l.key_changed("before");  // nothing away: not even remembered
  const segment_id disks[] = {5};
  l.dropped(disks, t0);
  l.key_changed("during");
  CHECK(l.refuses(copy_of("during", 1, 5)));
  CHECK_FALSE(l.refuses(copy_of("before", 1, 5)));
  CHECK_FALSE(l.refuses(copy_of("other", 1, 5)));
  CHECK_FALSE(l.refuses(copy_of("during", 1, 6)));  // another disk, not away
  l.all_keys_changed();
  CHECK(l.refuses(copy_of("other", 1, 5)));  // remove_all: nothing comes back
  // A disk that goes away after the changes takes back what it holds.
  const segment_id later[] = {6};
  l.dropped(later, t0 + 1s);
  CHECK_FALSE(l.refuses(copy_of("during", 1, 6)));
}

TEST_CASE("a disk away past the ttl is retired: its copies are refused if it comes back, until it offered again") {
  meta::disk_ledger l(1000);
  l.disk_mounted();
  const segment_id disks[] = {5};
  l.dropped(disks, t0);
  l.released(5, 40);
  CHECK(l.retire(t0 + 59min, 1h) == 0);
  CHECK(l.retire(t0 + 1h, 1h) == 1);
  CHECK(l.away() == 0);
  CHECK(l.refuses(copy_of("k", 41, 5)));  // retired: every copy
  l.mounted_again(5, t0 + 2h);
  CHECK(l.away() == 1);
  CHECK(l.refuses(copy_of("k", 41, 5)));  // came back refusing all
  CHECK(tell(l, 5, 0).released.empty());   // its released list went with the retirement
}

TEST_CASE("a promoted service refuses copies older than its first version") {
  meta::disk_ledger l(1000);
  l.refuse_below(5000);
  CHECK(l.refuses(copy_of("k", 4999, 1)));
  CHECK_FALSE(l.refuses(copy_of("k", 5000, 1)));
}

TEST_CASE("reservations: added, taken once by version and key, expired and dropped with their segments") {
  meta::disk_ledger l(1000);
  auto r = [](std::string key, segment_id from, segment_id to, time_point deadline) {
    return meta::demotion_reservations::reservation{std::move(key), {from, 1, 0, 64, 1}, {to, 1, 0, 4096, 2}, deadline};
  };
  l.reservations([&](meta::demotion_reservations& d) {
    d.add(1, r("a", 10, 20, t0 + 10s));
    d.add(2, r("b", 11, 20, t0 + 30s));
    d.add(3, r("c", 12, 21, t0 + 30s));
  });
  CHECK(l.reservations([](const meta::demotion_reservations& d) { return d.size(); }) == 3);
  l.reservations([&](meta::demotion_reservations& d) {
    CHECK_FALSE(d.take(1, "wrong key"));
    CHECK(d.contains(1));
    std::vector<segment_id> freed;
    CHECK(d.remove_if([&](const auto& x) { return x.deadline <= t0 + 10s; },
                      [&](const auto& x) { freed.push_back(x.to.segment); }) == 1);
    CHECK(freed == std::vector<segment_id>{20});
    const auto b = d.take(2, "b");
    REQUIRE(b);
    CHECK(b->from.segment == 11);
    CHECK_FALSE(d.take(2, "b"));  // taken once
    CHECK(d.remove_if([&](const auto& x) { return x.to.segment == 21; }, [](const auto&) {}) == 1);
    CHECK(d.size() == 0);
  });
}

}  // TEST_SUITE
