// The RDMA lane's decisions, without a device: work requests per request,
// chains and their signalled ends, send-queue slots, and per-request status
// after successes, failures, flushes and cancellation
// (transport/rdma_chain.hpp).

#include <corokv/transport/rdma_chain.hpp>

#include <doctest/doctest.h>

#include <vector>

using namespace corokv;
using corokv::transport::rdma_chain_plan;
using corokv::transport::rdma_completion;

TEST_CASE("rdma chain: a request longer than the largest message becomes several work requests") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths{10, 25, 5};
  plan.reset(lengths, 10, 32);
  const auto works = plan.works();
  REQUIRE(works.size() == 1 + 3 + 1);
  CHECK(works[1].request == 1);
  CHECK(works[1].offset == 0);
  CHECK(works[3].offset == 20);
  CHECK(works[3].length == 5);
  CHECK(works[4].request == 2);
}

TEST_CASE("rdma chain: chains fill the room there is, only their last work request is signalled, and slots come back") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths(10, 100);
  plan.reset(lengths, 1 << 20, 4);
  auto c1 = plan.next(6);
  CHECK(c1.first == 0);
  CHECK(c1.count == 4);  // at most max_chain
  auto c2 = plan.next(2);
  CHECK(c2.first == 4);
  CHECK(c2.count == 2);  // at most the room
  CHECK(plan.next(0).count == 0);
  CHECK(plan.has_unposted());
  CHECK(plan.chains_in_flight() == 2);
  CHECK(plan.ends_chain(3));
  CHECK(!plan.ends_chain(2));
  CHECK(plan.complete(3, rdma_completion::success) == 4);
  CHECK(plan.complete(5, rdma_completion::success) == 2);
  auto c3 = plan.next(100);
  CHECK(c3.first == 6);
  CHECK(c3.count == 4);
  CHECK(!plan.has_unposted());
  CHECK(!plan.finished());
  CHECK(plan.complete(9, rdma_completion::success) == 4);
  CHECK(plan.finished());
  for (errc e : plan.statuses()) CHECK(e == errc::success);
}

TEST_CASE("rdma chain: a failed work request fails its request, stops posting, and the flushed rest fail too") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths(6, 100);
  plan.reset(lengths, 1 << 20, 3);
  (void)plan.next(10);
  (void)plan.next(10);
  // Work 1 fails (retries exhausted); 2 ends the chain, flushed; the second
  // chain flushes whole.
  CHECK(plan.complete(1, rdma_completion::failed) == 0);
  CHECK(plan.stopped());
  CHECK(plan.complete(2, rdma_completion::flushed) == 3);
  CHECK(plan.complete(3, rdma_completion::flushed) == 0);
  CHECK(plan.complete(4, rdma_completion::flushed) == 0);
  CHECK(!plan.finished());
  CHECK(plan.complete(5, rdma_completion::flushed) == 3);
  CHECK(plan.finished());
  const auto s = plan.statuses();
  CHECK(s[0] == errc::success);  // completed before the failure, unsignalled
  for (std::size_t k = 1; k < 6; ++k) CHECK(s[k] == errc::transfer_failed);
}

TEST_CASE("rdma chain: a cancellation ends what was not posted as cancelled and waits for the flushed chains") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths(8, 100);
  plan.reset(lengths, 1 << 20, 4);
  (void)plan.next(4);  // works 0..3 in flight; 4..7 wait for room
  CHECK(plan.stop(errc::cancelled));  // chains in flight: the caller errors the queue pair
  CHECK(plan.next(100).count == 0);
  CHECK(!plan.finished());
  // Work 0 completed before the queue pair was errored (unsignalled: no
  // completion); the rest flush.
  CHECK(plan.complete(1, rdma_completion::flushed) == 0);
  CHECK(plan.complete(2, rdma_completion::flushed) == 0);
  CHECK(plan.complete(3, rdma_completion::flushed) == 4);
  CHECK(plan.finished());
  const auto s = plan.statuses();
  CHECK(s[0] == errc::success);
  for (std::size_t k = 1; k < 8; ++k) CHECK(s[k] == errc::cancelled);
}

TEST_CASE("rdma chain: nothing in flight when cancelled finishes at once, and an empty request has no work") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths{0, 100};
  plan.reset(lengths, 1 << 20, 4);
  CHECK(plan.works().size() == 1);
  CHECK(!plan.stop(errc::cancelled));
  CHECK(plan.finished());
  CHECK(plan.statuses()[0] == errc::success);
  CHECK(plan.statuses()[1] == errc::cancelled);
}

TEST_CASE("rdma chain: a chain ibv_post_send took only in part ends at its last posted work") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths(6, 100);
  plan.reset(lengths, 1 << 20, 6);
  const auto c = plan.next(6);
  REQUIRE(c.count == 6);
  // Works 0..2 went out, 3..5 were refused: 3 slots come back at once.
  CHECK(plan.truncate(c, 3) == 3);
  CHECK(plan.stopped());
  CHECK(plan.ends_chain(2));
  CHECK(!plan.ends_chain(5));
  CHECK(!plan.finished());
  CHECK(plan.complete(2, rdma_completion::flushed) == 3);  // the errored queue pair flushes the new end
  CHECK(plan.finished());
  const auto s = plan.statuses();
  CHECK(s[0] == errc::success);
  CHECK(s[2] == errc::transfer_failed);
  for (std::size_t k = 3; k < 6; ++k) CHECK(s[k] == errc::transfer_failed);

  // Nothing taken: the chain never was.
  plan.reset(lengths, 1 << 20, 6);
  const auto whole = plan.next(6);
  CHECK(plan.truncate(whole, 0) == 6);
  CHECK(plan.finished());
  for (errc e : plan.statuses()) CHECK(e == errc::transfer_failed);
}

TEST_CASE("rdma chain: abandoning fails every request not known complete, and a reset forgets why it stopped") {
  rdma_chain_plan plan;
  const std::vector<std::uint64_t> lengths(6, 100);
  plan.reset(lengths, 1 << 20, 2);
  (void)plan.next(2);
  (void)plan.next(2);
  CHECK(plan.complete(1, rdma_completion::success) == 2);  // requests 0 and 1 done
  plan.abandon(errc::cancelled);                            // the queue pair was destroyed
  CHECK(plan.finished());
  const auto s = plan.statuses();
  CHECK(s[0] == errc::success);
  CHECK(s[1] == errc::success);
  for (std::size_t k = 2; k < 6; ++k) CHECK(s[k] == errc::cancelled);

  plan.reset(lengths, 1 << 20, 6);
  (void)plan.next(6);
  CHECK(plan.complete(5, rdma_completion::flushed) == 6);  // flushed without a stop of its own
  CHECK(plan.statuses()[5] == errc::transfer_failed);     // not the previous run's reason
}
