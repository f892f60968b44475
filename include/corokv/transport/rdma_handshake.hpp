#pragma once
// How two RDMA lanes set up a reliable-connected queue pair between their
// nodes, without a device: over a connection to the peer's data server,
// the initiator sends rdma_connect with its endpoint (GID, queue pair
// number, first PSN, MTU, RDMA-read limits) and the responder answers with
// its own, or refuses. Both ends then use the smaller of both limits
// (agree). The exchange (exchange_rdma_endpoints, one
// net::connect_and_exchange) runs under a deadline; the connection it used
// stays open while the queue pair lives: either end closing it tells the
// other that the queue pair is gone.
//
// The RDMA lane (rdma_lane.hpp) makes the queue pairs and moves them to
// ready with what agree() says; tests/transport/rdma_handshake_test.cpp
// drives the rest with no device.

#include <corokv/error.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/one_exchange.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace corokv::transport {

// What this end's port offers a queue pair (the device's attributes).
struct rdma_port_limits {
  std::array<std::uint8_t, 16> gid{};
  std::uint8_t mtu = 3;                   // as ibv_mtu counts: 1 (256 bytes) to 5 (4096)
  std::uint16_t lid = 0;
  std::uint8_t initiator_depth = 0;      // RDMA reads a queue pair may have outstanding
  std::uint8_t responder_resources = 0;  // RDMA reads a queue pair can serve at once
};

// What this end's queue pair is connected with: the other end's address
// and the limits both ends agreed on.
struct rdma_agreement {
  std::array<std::uint8_t, 16> gid{};
  std::uint32_t qpn = 0;
  std::uint32_t psn = 0;
  std::uint8_t mtu = 3;        // the smaller of both ends', within 256..4096 bytes
  std::uint16_t lid = 0;
  std::uint8_t reads_out = 1;  // RDMA reads this end may have outstanding: at most what the other serves
  std::uint8_t reads_in = 1;   // RDMA reads this end serves at once: at least what the other sends
};

inline constexpr std::uint8_t rdma_mtu_256 = 1;   // IBV_MTU_256
inline constexpr std::uint8_t rdma_mtu_4096 = 5;  // IBV_MTU_4096

// What this end tells the other about its queue pair `qpn`, whose first
// packet sequence number is `psn`.
inline wire::rdma_endpoint own_rdma_endpoint(const rdma_port_limits& port, std::uint32_t qpn, std::uint32_t psn) {
  wire::rdma_endpoint e;
  e.gid = port.gid;
  e.qpn = qpn;
  e.psn = psn;
  e.initiator_depth = port.initiator_depth;
  e.responder_resources = port.responder_resources;
  e.mtu = port.mtu;
  e.lid = port.lid;
  return e;
}

// The smaller of both ends' limits: the MTU (kept within what verbs
// names), and the RDMA reads in flight each way (at least one).
inline rdma_agreement agree(const rdma_port_limits& own, const wire::rdma_endpoint& other) {
  rdma_agreement a;
  a.gid = other.gid;
  a.qpn = other.qpn;
  a.psn = other.psn;
  a.mtu = std::clamp<std::uint8_t>(std::min(other.mtu, own.mtu), rdma_mtu_256, rdma_mtu_4096);
  a.lid = other.lid;
  a.reads_out = std::max<std::uint8_t>(1, std::min(own.initiator_depth, other.responder_resources));
  a.reads_in = std::max<std::uint8_t>(1, std::min(own.responder_resources, other.initiator_depth));
  return a;
}

// The responder's first decision: whether a peer may have one more queue
// pair here (`held` are alive, at most `max_peers`). success, or no_space.
inline errc admit_rdma_peer(std::size_t held, std::size_t max_peers) noexcept {
  return held >= max_peers ? errc::no_space : errc::success;
}

// The initiator's exchange with `peer`'s data server, within `timeout`, on
// the awaiting coroutine's executor: the responder's endpoint and the
// connection, open; or nullopt and no connection if the peer cannot be
// reached, refuses, or answers anything else.
struct rdma_exchange_result {
  std::optional<wire::rdma_endpoint> responder;
  std::shared_ptr<boost::asio::ip::tcp::socket> link;
};

inline boost::asio::awaitable<rdma_exchange_result> exchange_rdma_endpoints(boost::asio::ip::tcp::endpoint peer,
                                                                            wire::rdma_endpoint own,
                                                                            std::chrono::milliseconds timeout) {
  auto socket = std::make_shared<boost::asio::ip::tcp::socket>(co_await boost::asio::this_coro::executor);
  wire::rdma_connect_response response;
  const errc answered = co_await net::connect_and_exchange(socket, peer, wire::message_type::rdma_connect,
                                                           wire::rdma_connect_request{own}, response, timeout);
  rdma_exchange_result out;
  if (answered != errc::success) co_return out;
  out.responder = response.responder;
  out.link = std::move(socket);
  co_return out;
}

}  // namespace corokv::transport
