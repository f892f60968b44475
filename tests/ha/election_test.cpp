// Who may lead once no master does (ha/election.hpp), without I/O: the
// published statuses, and the decision of each master from everyone's. In
// corokv_tests (not corokv_ha_tests), so that it runs under ASan too.

#include <corokv/ha/election.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace corokv;
using corokv::ha::copy_position;
using corokv::ha::decide_election;
using corokv::ha::election_peer;
using corokv::ha::election_verdict;
using corokv::ha::member_status;

namespace {

constexpr copy_position none{};
constexpr copy_position at(std::uint64_t term, std::uint64_t applied) { return {true, term, applied}; }

// A status published during the election after term `term` (final).
member_status final_at(copy_position p, std::uint64_t term) { return {p, static_cast<std::int64_t>(term) + 5}; }

election_verdict decide(const char* self, copy_position mine, std::uint64_t term, std::vector<election_peer> peers) {
  return decide_election(self, mine, term, peers);
}

}  // namespace

TEST_CASE("election: copies order by term, then position, no copy is behind every copy") {
  CHECK(none < at(1, 0));
  CHECK(at(1, 900) < at(2, 0));  // a newer term's copy holds what its leader took over
  CHECK(at(2, 3) < at(2, 4));
  CHECK(at(2, 4) == at(2, 4));
  CHECK(none == copy_position{false, 7, 9});  // no copy is no copy, whatever else it says
}

TEST_CASE("election: statuses round-trip through their text, and anything else is refused") {
  for (const member_status& s : {member_status{}, member_status{at(12, 4000), 0}, member_status{at(1, 0), 77},
                                 member_status{none, 31}}) {
    auto back = member_status::parse(s.encode());
    REQUIRE(back);
    CHECK(*back == s);
  }
  CHECK(member_status{at(12, 4000), 19}.encode() == "whole 12 4000 19");
  CHECK(member_status{none, 0}.encode() == "empty 0");
  for (const char* bad : {"", "whole", "whole 1 2", "whole 1 2 3 4", "empty", "empty -1", "whole -1 2 3",
                          "partial 1 2 3", "whole 1 x 3", "empty 3 ", " empty 3", "empty  3", "1:2"})
    CHECK_MESSAGE(!member_status::parse(bad), std::string(bad));
}

TEST_CASE("election: the issue's sequence: a restarted master with no copy defers to the one that holds everything") {
  // A led term 5 and died; B led term 13 and died before anyone had its
  // snapshot; A came back empty; C still holds term 5's journal.
  const member_status a{none, 0}, c = final_at(at(5, 4000), 13);
  CHECK(decide("a", none, 13, {{"a", a}, {"c", c}}) == election_verdict::defer);
  CHECK(decide("c", at(5, 4000), 13, {{"a", a}, {"c", c}}) == election_verdict::campaign);
  // Even when C has not published during this election yet, A never leads.
  CHECK(decide("a", none, 13, {{"c", member_status{at(5, 4000), 0}}}) == election_verdict::defer);
  // Had A loaded B's snapshot, its term-13 copy is the further one.
  CHECK(decide("c", at(5, 4000), 13, {{"a", final_at(at(13, 2), 13)}}) == election_verdict::defer);
  CHECK(decide("a", at(13, 2), 13, {{"c", c}}) == election_verdict::campaign);
}

TEST_CASE("election: a master waits for every live copy's final position, and defers to any further one") {
  // b's position was published before this election (when it loaded its
  // snapshot): it may have applied more since, so a waits for it.
  const member_status b_early{at(9, 100), 0};
  CHECK(decide("a", at(9, 150), 9, {{"b", b_early}}) == election_verdict::wait);
  // A status from an earlier election is not final for this one either.
  CHECK(decide("a", at(9, 150), 9, {{"b", member_status{at(9, 100), 8}}}) == election_verdict::wait);
  CHECK(decide("a", at(9, 150), 9, {{"b", member_status{at(9, 100), 9}}}) == election_verdict::wait);
  // Final and behind: a campaigns.
  CHECK(decide("a", at(9, 150), 9, {{"b", final_at(at(9, 100), 9)}}) == election_verdict::campaign);
  // Already further, even early: it only grows; a defers at once.
  CHECK(decide("a", at(9, 150), 9, {{"b", member_status{at(9, 151), 0}}}) == election_verdict::defer);
  // Ties go to the lowest name, both ways.
  CHECK(decide("a", at(9, 150), 9, {{"b", final_at(at(9, 150), 9)}}) == election_verdict::campaign);
  CHECK(decide("b", at(9, 150), 9, {{"a", final_at(at(9, 150), 9)}}) == election_verdict::defer);
  // An equal early status with a higher name is waited for, not beaten.
  CHECK(decide("a", at(9, 150), 9, {{"b", member_status{at(9, 150), 0}}}) == election_verdict::wait);
  // Masters without a copy do not hold anyone up; its own entry is skipped.
  CHECK(decide("a", at(9, 150), 9, {{"a", final_at(at(9, 1), 9)}, {"c", member_status{}}}) ==
        election_verdict::campaign);
}

TEST_CASE("election: with no copy anywhere (a new cluster, or every copy lost) any master may start afresh") {
  CHECK(decide("a", none, 0, {}) == election_verdict::campaign);
  CHECK(decide("a", none, 4, {{"b", member_status{}}, {"c", member_status{none, 6}}}) == election_verdict::campaign);
  CHECK(decide("b", none, 4, {{"a", member_status{}}}) == election_verdict::campaign);
}

// Every assignment of copies to three masters, each master deciding from
// the others' final statuses: exactly one campaigns, and it holds the
// furthest copy (no copy only if none has one).
TEST_CASE("election: among final statuses exactly one master campaigns, and it holds the furthest copy") {
  const std::vector<copy_position> choices{none, at(3, 0), at(3, 7), at(4, 0), at(4, 2)};
  const std::vector<std::string> names{"m0", "m1", "m2"};
  std::size_t cases = 0;
  for (const auto& p0 : choices)
    for (const auto& p1 : choices)
      for (const auto& p2 : choices) {
        const std::vector<copy_position> mine{p0, p1, p2};
        std::vector<election_peer> peers;
        for (std::size_t i = 0; i < 3; ++i) peers.push_back({names[i], final_at(mine[i], 4)});
        std::vector<std::size_t> campaigning;
        for (std::size_t i = 0; i < 3; ++i)
          if (decide_election(names[i], mine[i], 4, peers) == election_verdict::campaign) campaigning.push_back(i);
        const copy_position best = *std::max_element(mine.begin(), mine.end());
        INFO(member_status{p0}.encode() << " / " << member_status{p1}.encode() << " / " << member_status{p2}.encode());
        if (best.whole) {
          REQUIRE(campaigning.size() == 1);
          CHECK(mine[campaigning[0]] == best);
        } else {
          CHECK(campaigning.size() == 3);  // nobody holds anything: create_if_absent picks one
        }
        ++cases;
      }
  CHECK(cases == 125);
}
