#pragma once
// The RDMA lane's device side: what the post scheduler posts through
// (verbs_device: chains of work requests to a queue pair, queue pairs to
// the error state), the completion pump that turns the completion queue's
// work completions into the scheduler's, and the watcher of the device's
// asynchronous events. The transfers these finish are completed outside
// the lock, on their awaiting coroutines' executors (complete()).

#include <corokv/error.hpp>
#include <corokv/io/verbs.hpp>
#include <corokv/transport/rdma_chain.hpp>
#include <corokv/transport/rdma_lane_state.hpp>
#include <corokv/transport/rdma_post_scheduler.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <vector>

namespace corokv::transport::rdma_detail {

// Under the lock: the chain's work requests to the device. How many it
// took: all of them, or those before the one it refused.
inline std::size_t post_chain(state& s, transfer_group& g, rdma_chain_plan::chain chain) {
  std::vector<ibv_send_wr>& wrs = g.wrs;
  std::vector<ibv_sge>& sges = g.sges;
  wrs.resize(chain.count);
  sges.resize(chain.count);
  for (std::size_t i = 0; i < chain.count; ++i) {
    const std::size_t w = chain.first + i;
    const rdma_work& work = g.plan.works()[w];
    const target& t = g.targets[work.request];
    sges[i].addr = reinterpret_cast<std::uintptr_t>(t.local + work.offset);
    sges[i].length = work.length;
    sges[i].lkey = t.lkey;
    ibv_send_wr& wr = wrs[i];
    wr = {};
    wr.wr_id = reinterpret_cast<std::uintptr_t>(&g.tags[w]);
    wr.sg_list = &sges[i];
    wr.num_sge = 1;
    wr.opcode = g.read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    wr.send_flags = i + 1 == chain.count ? IBV_SEND_SIGNALED : 0;
    wr.wr.rdma.remote_addr = t.remote + work.offset;
    wr.wr.rdma.rkey = t.rkey;
    wr.next = i + 1 < chain.count ? &wrs[i + 1] : nullptr;
  }
  s.work_requests.fetch_add(chain.count, std::memory_order_relaxed);
  s.chains.fetch_add(1, std::memory_order_relaxed);
  ibv_send_wr* bad = nullptr;
  if (ibv_post_send(g.qp->qp.get(), wrs.data(), &bad) == 0) return chain.count;
  return bad ? static_cast<std::size_t>(bad - wrs.data()) : 0;
}

// What the scheduler posts through, under the lock; the transfers it
// finishes are completed once the lock is let go (complete()).
struct verbs_device {
  state& s;
  done_list& done;
  std::size_t post(transfer_group& g, rdma_chain_plan::chain chain) { return post_chain(s, g, chain); }
  bool to_error(rdma_send_queue& q) { return s.to_error(static_cast<queue_pair&>(q)); }
  void finished(rdma_post_batch<transfer_group>& b) {
    auto it = std::find_if(s.active.begin(), s.active.end(), [&](const auto& a) { return a.get() == &b; });
    if (it == s.active.end()) return;
    done.push_back(std::move(*it));
    s.active.erase(it);
  }
};

// Outside the lock: hands the result to the awaiting coroutine's executor.
inline void complete(const std::shared_ptr<transfer_op>& op) {
  if (op->slot.is_connected()) op->slot.clear();
  const std::error_code ec = op->cancelled ? std::error_code(errc::cancelled) : std::error_code{};
  std::unique_ptr<detail::posted_completion> handler = std::move(op->handler);
  handler->post(ec);
}

// Under the lock: a queue pair errored once (or destroyed, see to_error).
inline void break_queue_pair(state& s, queue_pair& q, done_list& done) {
  verbs_device device{s, done};
  s.scheduler.break_queue(device, q);
}

// Under the lock.
inline void on_completion(state& s, const ibv_wc& wc, done_list& done) {
  auto* tag = reinterpret_cast<work_tag*>(static_cast<std::uintptr_t>(wc.wr_id));
  if (!tag) return;
  const auto outcome = wc.status == IBV_WC_SUCCESS         ? rdma_completion::success
                       : wc.status == IBV_WC_WR_FLUSH_ERR ? rdma_completion::flushed
                                                           : rdma_completion::failed;
  verbs_device device{s, done};
  if (s.scheduler.complete(device, *tag->group, tag->work, outcome) != 0)
    s.chain_completions.fetch_add(1, std::memory_order_relaxed);
}

// Under the lock: every queue pair destroyed (after which none of them
// touches memory), the completion queue drained of what is left, and
// every transfer still out finished with transfer_failed.
inline void fail_everything(state& s, done_list& done, bool drain) {
  auto destroy = [&](queue_pair& q) {
    q.qp.reset();
    s.scheduler.forget(q);
  };
  for (auto& [peer, q] : s.peers) destroy(*q);
  for (auto& op : s.active)
    for (auto& g : op->groups)
      if (g->qp) destroy(*g->qp);
  if (drain) s.cq->drain([&](const ibv_wc& wc) { on_completion(s, wc, done); });
  verbs_device device{s, done};
  s.scheduler.abandon_all(device);
}

// The device's asynchronous events: a queue pair's fatal error breaks it,
// a port going down breaks them all, a failed completion queue fails
// everything; the port coming back up makes its segments reachable again.
inline boost::asio::awaitable<void> watch_device(std::shared_ptr<state> s) {
  for (;;) {
    ibv_async_event event{};
    if (co_await s->events->next(event)) co_return;
    s->device_events.fetch_add(1, std::memory_order_relaxed);
    // Acknowledged before the lock: destroying a queue pair waits for its
    // events' acknowledgements, and may happen under the lock.
    const ibv_event_type type = event.event_type;
    const void* which_qp = event.element.qp;  // compared, never used
    ibv_ack_async_event(&event);
    done_list done;
    {
      std::lock_guard lock(s->mu);
      switch (type) {
        case IBV_EVENT_QP_FATAL:
        case IBV_EVENT_QP_REQ_ERR:
        case IBV_EVENT_QP_ACCESS_ERR:
          for (auto& [peer, q] : s->peers)
            if (q->qp.get() == which_qp) break_queue_pair(*s, *q, done);
          for (auto& w : s->responders)
            if (auto q = w.lock(); q && q->qp.get() == which_qp) break_queue_pair(*s, *q, done);
          break;
        case IBV_EVENT_PORT_ERR:
        case IBV_EVENT_DEVICE_FATAL:
          s->port_active = false;
          for (auto& [peer, q] : s->peers) break_queue_pair(*s, *q, done);
          for (auto& w : s->responders)
            if (auto q = w.lock()) break_queue_pair(*s, *q, done);
          break;
        case IBV_EVENT_CQ_ERR:
          // The completion queue overran or failed: nothing will complete
          // through it. Its queue pairs are destroyed, their transfers
          // fail, and the lane carries nothing more.
          s->usable = false;
          fail_everything(*s, done, /*drain=*/false);
          break;
        case IBV_EVENT_PORT_ACTIVE:
          s->port_active = true;
          break;
        default:
          break;
      }
    }
    for (auto& d : done) complete(d);
  }
}

// Runs while transfers are outstanding: waits for the completion channel,
// then polls until empty. If the channel fails, nothing can complete: the
// queue pairs are destroyed and the transfers fail.
inline boost::asio::awaitable<void> pump(std::shared_ptr<state> s) {
  for (;;) {
    {
      std::lock_guard lock(s->mu);
      if (s->active.empty() || s->shutting_down) {
        s->pump_running = false;
        co_return;
      }
    }
    const std::error_code waited = co_await s->cq->wait();
    done_list done;
    {
      std::lock_guard lock(s->mu);
      if (waited) {
        s->pump_running = false;
        if (!s->shutting_down) s->usable = false;
        fail_everything(*s, done, /*drain=*/true);
      } else {
        s->completion_events.fetch_add(1, std::memory_order_relaxed);
        s->cq->drain([&](const ibv_wc& wc) { on_completion(*s, wc, done); });
      }
    }
    for (auto& d : done) complete(d);
    if (waited) co_return;
  }
}

// Under the lock: whether the caller must start the pump, once it let go
// of the lock (co_spawn may run the pump at once, on this thread).
inline bool pump_needed(state& s) {
  if (s.pump_running || s.active.empty() || s.shutting_down) return false;
  s.pump_running = true;
  return true;
}
inline void start_pump(const std::shared_ptr<state>& s) {
  boost::asio::co_spawn(s->strand, pump(s), boost::asio::detached);
}


}  // namespace corokv::transport::rdma_detail
