#pragma once
// The RDMA lane's queue pairs to other nodes: one per peer, made on first
// use over a connection to the peer's data server (the handshake,
// rdma_handshake.hpp) and rebuilt once broken; the link stays open while
// the queue pair lives, so that this end errors its queue pair at once
// when the peer goes away. The data server's side of that handshake
// (accept_peer) is here too: a queue pair held by the connection it was
// asked for on.

#include <corokv/error.hpp>
#include <corokv/io/verbs.hpp>
#include <corokv/transport/rdma_device.hpp>
#include <corokv/transport/rdma_handshake.hpp>
#include <corokv/transport/rdma_lane_state.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::transport::rdma_detail {

// The data server's side of rdma_connect: a queue pair for the peer,
// held by the connection the peer asked on. It only answers the peer's
// reads and writes, so its own send queue is one entry deep.
inline std::pair<wire::rdma_connect_response, std::shared_ptr<void>> accept_peer(
    const std::shared_ptr<state>& self, const wire::rdma_connect_request& request) {
  state& s = *self;
  std::pair<wire::rdma_connect_response, std::shared_ptr<void>> out{{errc::invalid_argument, {}}, nullptr};
  if (!s.available) return out;
  {
    std::lock_guard lock(s.mu);
    std::erase_if(s.responders, [](const auto& w) { return w.expired(); });
    if ((out.first.status = admit_rdma_peer(s.responders.size(), s.options.max_peers)) != errc::success)
      return out;
  }
  std::error_code ec;
  auto q = s.make_queue_pair(1, ec);
  const std::uint32_t psn = io::verbs::random_psn();
  if (!ec) ec = s.connect_queue_pair(*q, request.initiator, psn);
  if (ec) {
    out.first.status = errc::transfer_failed;
    return out;
  }
  out.first = {errc::success, own_rdma_endpoint(s.port, q->qp->qp_num, psn)};
  {
    std::lock_guard lock(s.mu);
    s.responders.push_back(q);
  }
  s.accepted.fetch_add(1, std::memory_order_relaxed);
  // The device must outlive the queue pair: the holder keeps both.
  struct held {
    std::shared_ptr<state> device_owner;
    std::shared_ptr<queue_pair> qp;
  };
  out.second = std::make_shared<held>(held{self, std::move(q)});
  return out;
}

// The peer's end of the link closes when its process ends: the queue pair
// is errored at once, so transfers to it fail now rather than after the
// transport's retries.
inline boost::asio::awaitable<void> watch_link(std::weak_ptr<state> weak, std::weak_ptr<queue_pair> weak_qp,
                                               std::shared_ptr<tcp::socket> socket) {
  std::array<std::byte, 1> byte{};
  (void)co_await socket->async_read_some(boost::asio::buffer(byte),
                                         boost::asio::as_tuple(boost::asio::use_awaitable));
  auto s = weak.lock();
  auto q = weak_qp.lock();
  if (!s || !q) co_return;
  done_list done;
  {
    std::lock_guard lock(s->mu);
    break_queue_pair(*s, *q, done);
  }
  for (auto& d : done) complete(d);
}

// The exchange (rdma_handshake.hpp) and its deadline run on this
// coroutine's executor.
inline boost::asio::awaitable<std::shared_ptr<queue_pair>> connect_to_peer(std::shared_ptr<state> s, tcp::endpoint peer) {
  namespace asio = boost::asio;
  std::error_code ec;
  auto q = s->make_queue_pair(s->depth, ec);
  if (!q) co_return nullptr;
  const std::uint32_t psn = io::verbs::random_psn();
  const wire::rdma_endpoint own = own_rdma_endpoint(s->port, q->qp->qp_num, psn);
  rdma_exchange_result exchanged = co_await exchange_rdma_endpoints(peer, own, s->options.connect_timeout);
  if (!exchanged.responder || s->connect_queue_pair(*q, *exchanged.responder, psn)) co_return nullptr;
  q->link = std::move(exchanged.link);
  s->connections.fetch_add(1, std::memory_order_relaxed);
  auto ex = co_await asio::this_coro::executor;
  asio::co_spawn(ex, watch_link(std::weak_ptr<state>(s), std::weak_ptr<queue_pair>(q), q->link), asio::detached);
  co_return q;
}

// A connected queue pair to `peer`'s node, or null if it cannot be had.
inline boost::asio::awaitable<std::shared_ptr<queue_pair>> queue_pair_for(std::shared_ptr<state> s, tcp::endpoint peer) {
  {
    std::lock_guard lock(s->mu);
    if (auto it = s->peers.find(peer); it != s->peers.end() && !it->second->broken) co_return it->second;
  }
  auto q = co_await connect_to_peer(s, peer);
  if (!q) co_return nullptr;
  std::shared_ptr<queue_pair> replaced;  // destroyed outside the lock (ibv_destroy_qp may wait for event acks)
  {
    std::lock_guard lock(s->mu);
    replaced = std::exchange(s->peers[peer], q);
  }
  co_return q;
}


}  // namespace corokv::transport::rdma_detail
