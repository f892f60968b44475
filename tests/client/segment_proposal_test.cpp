// client/segment_proposal.hpp: mounting under a proposed segment id; the
// decisions, and the driver with a scripted service.

#include <corokv/client/segment_proposal.hpp>

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <deque>
#include <set>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;
using client::segment_proposal;
using step = segment_proposal::step;

TEST_SUITE("segment_proposal") {

TEST_CASE("a fresh proposal that is taken gives way to another id, at most three in all, other errors end it") {
  auto p = segment_proposal::fresh(41);
  CHECK(p.id() == 41);
  const time_point now = clock_type::now();
  CHECK(p.answered(errc::already_exists, now) == step::propose_another);
  CHECK(p.previous() == 41);
  CHECK(p.id() != 41);
  CHECK(p.id() != 0);
  CHECK(p.answered(errc::already_exists, now) == step::propose_another);
  CHECK(p.answered(errc::already_exists, now) == step::failed);  // the third taken id

  CHECK(segment_proposal::fresh(7).answered({}, now) == step::mounted);
  CHECK(segment_proposal::fresh(7).answered(errc::invalid_argument, now) == step::failed);
  CHECK(segment_proposal::fresh(7).answered(errc::rpc_failed, now) == step::failed);
}

TEST_CASE("a remount keeps its id and asks again while the previous holder lingers, until it gives up") {
  const time_point start = clock_type::now();
  auto p = segment_proposal::again(9, start + 1s);
  CHECK(p.answered(errc::already_exists, start) == step::ask_again_later);
  CHECK(p.id() == 9);
  CHECK(p.answered(errc::already_exists, start + 999ms) == step::ask_again_later);
  CHECK(p.answered(errc::already_exists, start + 1s) == step::failed);
  CHECK(segment_proposal::again(9, start + 1s).answered({}, start) == step::mounted);
}

TEST_CASE("the driver: each id is reachable while it is asked, a taken one is withdrawn, nothing is left on failure") {
  struct run {
    explicit run(std::deque<errc> said) : answers(std::move(said)) {}
    std::deque<errc> answers;  // what the service says, in order
    std::vector<segment_id> asked;
    std::set<segment_id> reachable;
    std::error_code reach_error;
    int pauses = 0;
    std::pair<std::error_code, segment_id> result{errc::internal_error, 0};

    void go(segment_proposal proposal) {
      reachable.insert(proposal.id());  // the caller makes the first id reachable
      boost::asio::io_context io;
      auto mount = [this](segment_id id) -> boost::asio::awaitable<std::pair<std::error_code, segment_id>> {
        asked.push_back(id);
        CHECK(reachable.count(id) == 1);  // never asked before it is reachable
        const errc answer = answers.front();
        answers.pop_front();
        co_return std::pair<std::error_code, segment_id>{answer, answer == errc::success ? id : 0};
      };
      auto reach = [this](segment_id id) {
        if (!reach_error) reachable.insert(id);
        return reach_error;
      };
      auto withdraw = [this](segment_id id) { CHECK(reachable.erase(id) == 1); };
      auto pause = [this]() -> boost::asio::awaitable<void> {
        ++pauses;
        co_return;
      };
      boost::asio::co_spawn(io, client::mount_proposed(proposal, mount, reach, withdraw, pause),
                            [this](std::exception_ptr e, std::pair<std::error_code, segment_id> r) {
                              REQUIRE(!e);
                              result = r;
                            });
      io.run();
    }
  };

  SUBCASE("taken once, then mounted under the second id") {
    run r({errc::already_exists, errc::success});
    r.go(segment_proposal::fresh(5));
    REQUIRE(r.asked.size() == 2);
    CHECK(r.asked[0] == 5);
    CHECK(!r.result.first);
    CHECK(r.result.second == r.asked[1]);
    CHECK(r.reachable == std::set<segment_id>{r.asked[1]});
  }
  SUBCASE("every proposal taken: already_exists, nothing reachable") {
    run r({errc::already_exists, errc::already_exists, errc::already_exists});
    r.go(segment_proposal::fresh(5));
    CHECK(r.asked.size() == 3);
    CHECK(r.result.first == errc::already_exists);
    CHECK(r.reachable.empty());
  }
  SUBCASE("a refusal other than a taken id ends it at once") {
    run r({errc::invalid_argument});
    r.go(segment_proposal::fresh(5));
    CHECK(r.asked.size() == 1);
    CHECK(r.result.first == errc::invalid_argument);
    CHECK(r.reachable.empty());
  }
  SUBCASE("the next id cannot be made reachable: that error, nothing left") {
    run r({errc::already_exists});
    r.reach_error = make_error_code(errc::no_space);
    r.go(segment_proposal::fresh(5));
    CHECK(r.result.first == errc::no_space);
    CHECK(r.reachable.empty());
  }
  SUBCASE("a remount pauses between askings and keeps its id") {
    run r({errc::already_exists, errc::already_exists, errc::success});
    r.go(segment_proposal::again(77, clock_type::now() + 1h));
    CHECK(r.pauses == 2);
    CHECK(r.asked == std::vector<segment_id>{77, 77, 77});
    CHECK(r.result.second == 77);
    CHECK(r.reachable == std::set<segment_id>{77});
  }
}

}  // TEST_SUITE
