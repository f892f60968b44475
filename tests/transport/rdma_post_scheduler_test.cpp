// The RDMA lane's post scheduler without a device
// (transport/rdma_post_scheduler.hpp): room in the send queues and the
// completion queue, first come first served among waiting groups, one
// chain's completion and failure, cancellation, a queue pair that cannot
// be errored, and many groups at once. A fake device records what was
// posted and completes it when the test says.

#include <corokv/transport/rdma_post_scheduler.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

using namespace corokv;
using corokv::transport::rdma_completion;
using corokv::transport::rdma_send_queue;

namespace {

struct test_group : corokv::transport::rdma_post_group {
  int name = 0;
};
using scheduler = corokv::transport::rdma_post_scheduler<test_group>;
using batch = scheduler::batch;

struct posted_chain {
  test_group* group;
  corokv::transport::rdma_chain_plan::chain chain;
};

struct fake_device {
  std::vector<posted_chain> posted;
  std::vector<batch*> ended;
  std::vector<rdma_send_queue*> errored;
  bool can_error = true;           // to_error: false = the queue pair had to be destroyed
  std::size_t refuse_after = SIZE_MAX;  // post: take only this many works of the next chain

  std::size_t post(test_group& g, corokv::transport::rdma_chain_plan::chain c) {
    posted.push_back({&g, c});
    if (refuse_after < c.count) return std::exchange(refuse_after, SIZE_MAX);
    return c.count;
  }
  bool to_error(rdma_send_queue& q) {
    errored.push_back(&q);
    return can_error;
  }
  void finished(batch& b) { ended.push_back(&b); }
};

// A group of `requests` requests of one work each, to queue q.
test_group& add_group(batch& b, rdma_send_queue& q, std::size_t requests, std::uint32_t chain, int name) {
  test_group& g = b.add();
  g.queue = &q;
  g.name = name;
  const std::vector<std::uint64_t> lengths(requests, 100);
  g.plan.reset(lengths, 1 << 20, chain);
  return g;
}

// Completes chain i of what was posted (its signalled end) with `outcome`.
std::size_t complete_chain(scheduler& s, fake_device& d, std::size_t i, rdma_completion outcome = rdma_completion::success) {
  const posted_chain p = d.posted[i];
  return s.complete(d, *p.group, p.chain.first + p.chain.count - 1, outcome);
}

}  // namespace

TEST_CASE("rdma post scheduler: chains fill the send queue's room and the completion queue's, no more") {
  scheduler s;
  s.set_capacity(6);  // the completion queue
  fake_device d;
  rdma_send_queue q1{8, 0, false}, q2{8, 0, false};
  batch b;
  add_group(b, q1, 4, 2, 1);
  add_group(b, q2, 10, 2, 2);
  s.start(d, b, true);
  // q1 takes its 4 (two chains of 2); q2 only what the completion queue has left: 2.
  REQUIRE(d.posted.size() == 3);
  CHECK(q1.in_flight == 4);
  CHECK(q2.in_flight == 2);
  CHECK(s.in_flight() == 6);
  CHECK(s.waiting() == 1);
  CHECK(d.ended.empty());
  // One chain of q1 completes: its 2 slots go to q2, which waits for more.
  CHECK(complete_chain(s, d, 0) == 2);
  REQUIRE(d.posted.size() == 4);
  CHECK(d.posted[3].group->name == 2);
  CHECK(s.in_flight() == 6);
  CHECK(q1.in_flight == 2);
  CHECK(q2.in_flight == 4);
  CHECK(s.waiting() == 1);
  // A send queue's own depth bounds it too.
  rdma_send_queue shallow{1, 0, false};
  scheduler t;
  t.set_capacity(100);
  batch c;
  add_group(c, shallow, 3, 8, 3);
  fake_device e;
  t.start(e, c, true);
  REQUIRE(e.posted.size() == 1);
  CHECK(e.posted[0].chain.count == 1);
  CHECK(shallow.in_flight == 1);
}

TEST_CASE("rdma post scheduler: groups waiting for room are served first come, first served") {
  scheduler s;
  s.set_capacity(2);
  fake_device d;
  rdma_send_queue q1{8, 0, false}, q2{8, 0, false}, q3{8, 0, false};
  batch b1, b2, b3;
  add_group(b1, q1, 4, 2, 1);
  s.start(d, b1, true);  // posts one chain of 2: the completion queue is full
  add_group(b2, q2, 2, 2, 2);
  s.start(d, b2, true);  // waits
  add_group(b3, q3, 2, 2, 3);
  s.start(d, b3, true);  // waits behind b2
  REQUIRE(d.posted.size() == 1);
  CHECK(s.waiting() == 3);  // b1's group too: it has works left
  // b1's chain completes: the line is served in order, b1's group (first in
  // line) takes the room, then nothing is left for the others.
  CHECK(complete_chain(s, d, 0) == 2);
  REQUIRE(d.posted.size() == 2);
  CHECK(d.posted[1].group->name == 1);
  // b1's last chain completes: b1 is finished, and b2 goes before b3.
  CHECK(complete_chain(s, d, 1) == 2);
  REQUIRE(d.ended.size() == 1);
  CHECK(d.ended[0] == &b1);
  REQUIRE(d.posted.size() == 3);
  CHECK(d.posted[2].group->name == 2);
  CHECK(complete_chain(s, d, 2) == 2);
  REQUIRE(d.posted.size() == 4);
  CHECK(d.posted[3].group->name == 3);
  CHECK(complete_chain(s, d, 3) == 2);
  CHECK(d.ended.size() == 3);
  CHECK(s.in_flight() == 0);
  CHECK(s.waiting() == 0);
  CHECK(s.batches() == 0);
}

TEST_CASE("rdma post scheduler: a new batch queues behind waiting groups even when its own queue pair has room") {
  scheduler s;
  s.set_capacity(100);
  fake_device d;
  rdma_send_queue full{2, 0, false}, idle{8, 0, false};
  batch b1, b2;
  add_group(b1, full, 4, 2, 1);
  s.start(d, b1, true);
  CHECK(s.waiting() == 1);
  add_group(b2, idle, 2, 2, 2);
  s.start(d, b2, true);
  CHECK(d.posted.size() == 1);  // b2 waits its turn
  CHECK(s.waiting() == 2);
  CHECK(complete_chain(s, d, 0) == 2);
  REQUIRE(d.posted.size() == 3);
  CHECK(d.posted[1].group->name == 1);
  CHECK(d.posted[2].group->name == 2);
}

TEST_CASE("rdma post scheduler: one chain completes its batch, and a failed one errors the queue pair and fails its requests") {
  scheduler s;
  s.set_capacity(100);
  fake_device d;
  rdma_send_queue q{16, 0, false};
  batch ok;
  test_group& g = add_group(ok, q, 3, 8, 1);
  s.start(d, ok, true);
  REQUIRE(d.posted.size() == 1);
  CHECK(complete_chain(s, d, 0) == 3);
  REQUIRE(d.ended.size() == 1);
  CHECK(g.done);
  for (errc e : g.plan.statuses()) CHECK(e == errc::success);

  batch bad;
  test_group& h = add_group(bad, q, 3, 8, 2);
  s.start(d, bad, true);
  // Work 1 fails: the queue pair is errored, work 2 (the chain's end) flushes.
  CHECK(s.complete(d, h, 1, rdma_completion::failed) == 0);
  REQUIRE(d.errored.size() == 1);
  CHECK(q.broken);
  CHECK(d.ended.size() == 1);
  CHECK(s.complete(d, h, 2, rdma_completion::flushed) == 3);
  REQUIRE(d.ended.size() == 2);
  CHECK(d.ended[1] == &bad);
  CHECK(h.plan.statuses()[0] == errc::success);
  CHECK(h.plan.statuses()[1] == errc::transfer_failed);
  CHECK(h.plan.statuses()[2] == errc::transfer_failed);
  CHECK(q.in_flight == 0);
  // A broken queue pair takes nothing more: a batch to it fails at once.
  batch after;
  test_group& late = add_group(after, q, 2, 8, 3);
  s.start(d, after, true);
  CHECK(d.ended.size() == 3);
  CHECK(late.plan.statuses()[0] == errc::transfer_failed);
}

TEST_CASE("rdma post scheduler: a chain the device took only in part ends at its last posted work") {
  scheduler s;
  s.set_capacity(100);
  fake_device d;
  d.refuse_after = 2;
  rdma_send_queue q{16, 0, false};
  batch b;
  test_group& g = add_group(b, q, 5, 8, 1);
  s.start(d, b, true);
  CHECK(q.broken);
  CHECK(q.in_flight == 2);  // the refused three are not counted
  CHECK(s.in_flight() == 2);
  CHECK(d.ended.empty());
  CHECK(s.complete(d, g, 0, rdma_completion::flushed) == 0);
  CHECK(s.complete(d, g, 1, rdma_completion::flushed) == 2);
  REQUIRE(d.ended.size() == 1);
  for (errc e : g.plan.statuses()) CHECK(e == errc::transfer_failed);
}

TEST_CASE("rdma post scheduler: a cancelled batch errors its queue pair and finishes once its chains flushed") {
  scheduler s;
  s.set_capacity(100);
  fake_device d;
  rdma_send_queue q{2, 0, false}, other{8, 0, false};
  batch b;
  test_group& g = add_group(b, q, 6, 2, 1);
  test_group& quiet = add_group(b, other, 0, 2, 2);  // nothing to move: done at once
  s.start(d, b, true);
  CHECK(quiet.done);
  CHECK(s.waiting() == 1);
  s.cancel(d, b);
  CHECK(q.broken);
  CHECK(d.ended.empty());  // its chain is still in flight
  CHECK(s.complete(d, g, 0, rdma_completion::flushed) == 0);
  CHECK(s.complete(d, g, 1, rdma_completion::flushed) == 2);
  CHECK(s.waiting() == 0);  // done: out of the line
  REQUIRE(d.ended.size() == 1);
  const auto st = g.plan.statuses();
  CHECK(st[0] == errc::cancelled);
  CHECK(st[1] == errc::cancelled);
  for (std::size_t k = 2; k < 6; ++k) CHECK(st[k] == errc::cancelled);
  s.cancel(d, b);  // a finished batch: nothing
  CHECK(d.ended.size() == 1);
}

TEST_CASE("rdma post scheduler: a queue pair that cannot be errored abandons every group on it, in every batch") {
  scheduler s;
  s.set_capacity(100);
  fake_device d;
  d.can_error = false;
  rdma_send_queue dying{4, 0, false}, healthy{4, 0, false};
  batch b1, b2;
  test_group& h1 = add_group(b1, healthy, 2, 2, 2);
  test_group& g1 = add_group(b1, dying, 8, 2, 1);
  test_group& g2 = add_group(b2, dying, 2, 2, 3);
  s.start(d, b1, true);
  s.start(d, b2, true);
  CHECK(s.in_flight() == 6);
  s.break_queue(d, dying);
  CHECK(dying.broken);
  CHECK(dying.in_flight == 0);
  CHECK(s.in_flight() == 2);  // the healthy queue pair's chain
  CHECK(g1.done);
  CHECK(g2.done);
  for (errc e : g1.plan.statuses()) CHECK(e == errc::transfer_failed);
  REQUIRE(d.ended.size() == 1);
  CHECK(d.ended[0] == &b2);
  // b1 still waits for its healthy group, whose completion finishes it.
  CHECK(!h1.done);
  const posted_chain healthy_chain = *std::find_if(d.posted.begin(), d.posted.end(),
                                                   [&](const posted_chain& p) { return p.group == &h1; });
  CHECK(s.complete(d, h1, healthy_chain.chain.first + healthy_chain.chain.count - 1, rdma_completion::success) == 2);
  REQUIRE(d.ended.size() == 2);
  CHECK(h1.plan.statuses()[0] == errc::success);
  // A completion of the abandoned group that still came in changes nothing.
  CHECK(s.complete(d, g1, 1, rdma_completion::flushed) == 0);
}

TEST_CASE("rdma post scheduler: a lane that cannot complete anything fails a new batch at once, and abandon_all ends the rest") {
  scheduler s;
  s.set_capacity(100);
  fake_device d;
  rdma_send_queue q{4, 0, false};
  batch refused;
  test_group& r = add_group(refused, q, 3, 2, 1);
  s.start(d, refused, /*usable=*/false);
  CHECK(d.posted.empty());
  REQUIRE(d.ended.size() == 1);
  for (errc e : r.plan.statuses()) CHECK(e == errc::transfer_failed);

  batch empty;
  s.start(d, empty, true);  // no groups: finished at once
  CHECK(d.ended.size() == 2);

  batch out;
  test_group& g = add_group(out, q, 8, 2, 2);
  s.start(d, out, true);
  CHECK(s.waiting() == 1);
  s.forget(q);
  s.abandon_all(d);
  CHECK(d.ended.size() == 3);
  CHECK(s.in_flight() == 0);
  CHECK(s.waiting() == 0);
  for (errc e : g.plan.statuses()) CHECK(e == errc::transfer_failed);
}

TEST_CASE("rdma post scheduler: many groups over few slots all finish, the slots never overbooked") {
  scheduler s;
  s.set_capacity(16);
  fake_device d;
  constexpr int peers = 8, batches = 40;
  std::vector<rdma_send_queue> queues(peers, rdma_send_queue{6, 0, false});
  std::vector<batch> bs(batches);
  std::size_t completed_chains = 0;
  for (int i = 0; i < batches; ++i) {
    for (int p = 0; p < 3; ++p) add_group(bs[i], queues[(i + p) % peers], 1 + (i * 7 + p) % 9, 3, i * 10 + p);
    s.start(d, bs[i], true);
    CHECK(s.in_flight() <= s.capacity());
  }
  // Complete the oldest chain in flight until everything is in.
  std::size_t next = 0;
  while (next < d.posted.size()) {
    CHECK(complete_chain(s, d, next++) > 0);
    ++completed_chains;
    CHECK(s.in_flight() <= s.capacity());
    for (const auto& q : queues) CHECK(q.in_flight <= q.depth);
  }
  CHECK(d.ended.size() == batches);
  CHECK(s.batches() == 0);
  CHECK(s.in_flight() == 0);
  CHECK(completed_chains == d.posted.size());
  for (auto& b : bs)
    for (auto& g : b.groups)
      for (errc e : g->plan.statuses()) CHECK(e == errc::success);
}
