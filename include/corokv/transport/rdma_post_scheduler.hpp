#pragma once
// When the RDMA lane posts what, without a device: the transfers in flight,
// each a batch of groups (one per peer, so per queue pair), each group with
// its chain plan (rdma_chain.hpp). It counts the room there is, in every
// send queue and in the completion queue, posts chains while there is some,
// keeps the groups that must wait for room in line (first come, first
// served: a group whose chain completed goes behind those already waiting),
// finishes a group once its plan is finished and a batch once all its
// groups are, and abandons the groups of a queue pair that died.
//
// The lane (rdma_lane.hpp) owns the memory and the verbs: the scheduler
// calls back a Device for the three things that touch them:
//   std::size_t post(Group&, rdma_chain_plan::chain)
//       posts the chain's work requests; how many the device took (all of
//       them, or those before the one ibv_post_send refused);
//   bool to_error(rdma_send_queue&)
//       moves the queue pair to error, so that what it has outstanding
//       flushes; false if it could not, and then destroyed it (none of its
//       work touches memory any more, and none of it completes);
//   void finished(rdma_post_batch<Group>&)
//       the batch's every group is done: nothing of it is in flight.
// Room: at most `capacity` work requests over all queue pairs, so that the
// completion queue holds every completion even if all of them flushed.
// Not thread-safe: the lane calls it under its lock.
// tests/transport/rdma_post_scheduler_test.cpp drives it with a fake device.

#include <corokv/error.hpp>
#include <corokv/transport/rdma_chain.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

namespace corokv::transport {

// One queue pair's send queue, as the scheduler counts it.
struct rdma_send_queue {
  std::uint32_t depth = 0;
  std::uint32_t in_flight = 0;  // posted work requests not yet known complete
  bool broken = false;          // in error (or destroyed): nothing more is posted to it
};

struct rdma_post_batch_state {
  std::size_t unfinished = 0;  // groups not done
  bool finished = false;       // every group done, and reported to the device
};

// A batch's requests to one queue pair. The lane's group derives from it.
struct rdma_post_group {
  rdma_post_batch_state* batch = nullptr;  // set by rdma_post_batch::add
  rdma_send_queue* queue = nullptr;        // null: no queue pair could be had
  rdma_chain_plan plan;
  bool done = false;     // the plan finished: nothing of it is in flight
  bool waiting = false;  // in line for room
};

// One transfer: its groups, owned here (the work requests' ids point into them).
template <class Group>
struct rdma_post_batch : rdma_post_batch_state {
  std::vector<std::unique_ptr<Group>> groups;
  Group& add() {
    groups.push_back(std::make_unique<Group>());
    groups.back()->batch = this;
    return *groups.back();
  }
};

template <class Group>
  requires std::derived_from<Group, rdma_post_group>
class rdma_post_scheduler {
 public:
  using batch = rdma_post_batch<Group>;

  // The completion queue's capacity: the work requests in flight over all
  // queue pairs.
  void set_capacity(std::size_t capacity) noexcept { capacity_ = capacity; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t in_flight() const noexcept { return in_flight_; }
  std::size_t waiting() const noexcept { return waiting_.size(); }
  std::size_t batches() const noexcept { return active_.size(); }

  // A batch whose plans are set: posts what there is room for, behind the
  // groups already waiting. A batch that can never complete (`usable`
  // false: the lane is shutting down, or its completion queue failed) ends
  // at once, every request transfer_failed; so does one with no groups.
  template <class Device>
  void start(Device& device, batch& b, bool usable) {
    b.unfinished = b.groups.size();
    b.finished = false;
    active_.push_back(&b);
    if (!usable)
      for (auto& g : b.groups) g->plan.abandon(errc::transfer_failed);
    for (auto& g : b.groups) {
      if (!waiting_.empty() && can_post(*g))
        enqueue(*g);
      else
        post_group(device, *g);
    }
    if (b.unfinished == 0) finish(device, b);
  }

  // A completion for work `work` of group g. Returns the send-queue slots it
  // freed (non-zero once per chain: its signalled end). A failed or flushed
  // work breaks the queue pair. Slots that came free go to the groups in
  // line first, then to g.
  template <class Device>
  std::size_t complete(Device& device, Group& g, std::size_t work, rdma_completion outcome) {
    if (g.done) return 0;  // abandoned with its queue pair
    if (outcome != rdma_completion::success) break_queue(device, *g.queue);
    if (g.done) return 0;
    const std::size_t freed = g.plan.complete(work, outcome);
    if (freed == 0) return 0;
    g.queue->in_flight -= static_cast<std::uint32_t>(freed);
    in_flight_ -= freed;
    if (!waiting_.empty() && can_post(g))
      enqueue(g);
    else
      post_group(device, g);
    line_.swap(waiting_);  // line_ is empty: nothing else walks the line
    for (Group* next : line_) {
      next->waiting = false;
      post_group(device, *next);
    }
    line_.clear();
    return freed;
  }

  // A terminal cancellation of batch b: what was not posted ends cancelled,
  // and a queue pair with chains of b in flight is broken, so that they
  // flush. Finishes b once nothing of it is in flight.
  template <class Device>
  void cancel(Device& device, batch& b) {
    if (b.finished) return;
    for (auto& g : b.groups) {
      if (g->done) continue;
      if (g->plan.stop(errc::cancelled) && g->queue) break_queue(device, *g->queue);
      group_finished(device, *g);
    }
  }

  // Moves a queue pair to error once: what it has outstanding flushes (and
  // fails its requests). One the device could not error was destroyed: the
  // groups using it are abandoned, transfer_failed.
  template <class Device>
  void break_queue(Device& device, rdma_send_queue& q) {
    if (q.broken) return;
    q.broken = true;
    if (device.to_error(q)) return;
    forget(q);
    const std::vector<batch*> batches = active_;  // finishing edits the list
    for (batch* b : batches)
      for (auto& g : b->groups)
        if (g->queue == &q && !g->done) {
          g->plan.abandon(errc::transfer_failed);
          group_finished(device, *g);
        }
  }

  // The queue pair was destroyed (by the lane): nothing it had outstanding
  // completes, so its slots are no longer counted.
  void forget(rdma_send_queue& q) noexcept {
    q.broken = true;
    in_flight_ -= std::min<std::size_t>(in_flight_, q.in_flight);
    q.in_flight = 0;
  }

  // Nothing will complete any more (every queue pair destroyed, the
  // completion queue drained): every group not done is abandoned,
  // transfer_failed, and every batch finishes.
  template <class Device>
  void abandon_all(Device& device) {
    waiting_.clear();
    const std::vector<batch*> batches = active_;
    for (batch* b : batches)
      for (auto& g : b->groups) {
        g->waiting = false;
        if (g->done) continue;
        g->plan.abandon(errc::transfer_failed);
        group_finished(device, *g);
      }
    in_flight_ = 0;
  }

 private:
  static bool can_post(const Group& g) noexcept {
    return g.plan.has_unposted() && g.queue && !g.queue->broken;
  }

  void enqueue(Group& g) {
    if (g.waiting) return;
    g.waiting = true;
    waiting_.push_back(&g);
  }

  // Posts as many chains of g as there is room for, in its queue pair and
  // in the completion queue; g waits in line if some are left.
  template <class Device>
  void post_group(Device& device, Group& g) {
    if (g.done) return;
    if (!g.queue || g.queue->broken) {
      if (!g.plan.stopped()) g.plan.stop(errc::transfer_failed);
    } else {
      rdma_send_queue& q = *g.queue;
      for (;;) {
        const std::size_t room = std::min<std::size_t>(q.depth - q.in_flight,
                                                       capacity_ > in_flight_ ? capacity_ - in_flight_ : 0);
        const auto chain = g.plan.next(room);
        if (chain.count == 0) break;
        q.in_flight += static_cast<std::uint32_t>(chain.count);
        in_flight_ += chain.count;
        const std::size_t posted = device.post(g, chain);
        if (posted < chain.count) {
          // Only the works before the refused one went out, unsignalled:
          // the chain now ends at the last of them, and the queue pair is
          // errored, so that each of them completes and the last one ends
          // the chain.
          const std::size_t refused = g.plan.truncate(chain, posted);
          q.in_flight -= static_cast<std::uint32_t>(refused);
          in_flight_ -= refused;
          break_queue(device, q);
        }
        if (q.broken) break;
      }
      if (g.plan.has_unposted() && !q.broken) enqueue(g);
    }
    group_finished(device, g);
  }

  // If g's plan is finished, g is done, and its batch too once all its
  // groups are.
  template <class Device>
  void group_finished(Device& device, Group& g) {
    if (g.done || !g.plan.finished()) return;
    g.done = true;
    if (g.waiting) {
      std::erase(waiting_, &g);
      g.waiting = false;
    }
    if (--g.batch->unfinished == 0) finish(device, static_cast<batch&>(*g.batch));
  }

  template <class Device>
  void finish(Device& device, batch& b) {
    if (b.finished) return;
    b.finished = true;
    std::erase(active_, &b);
    device.finished(b);
  }

  std::size_t capacity_ = 0;
  std::size_t in_flight_ = 0;  // over every queue pair: at most capacity_
  std::vector<batch*> active_;
  std::deque<Group*> waiting_;
  std::deque<Group*> line_;  // the line being served, kept for its memory
};

}  // namespace corokv::transport
