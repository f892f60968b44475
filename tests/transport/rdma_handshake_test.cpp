// The RDMA queue-pair handshake without a device
// (transport/rdma_handshake.hpp): the limits both ends agree on, the
// responder's admission, the answer's validation, and the initiator's
// exchange over TCP against a responder played by the test: accepted,
// refused, wrong answers, a peer that hangs up, a peer that never answers.

#include <corokv/transport/rdma_handshake.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <optional>

using namespace corokv;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

corokv::transport::rdma_port_limits rdma_port_of(std::uint8_t mtu, std::uint8_t initiator, std::uint8_t responder) {
  corokv::transport::rdma_port_limits p;
  p.gid[15] = 7;
  p.mtu = mtu;
  p.lid = 3;
  p.initiator_depth = initiator;
  p.responder_resources = responder;
  return p;
}

// How the test's responder answers one rdma_connect.
enum class handshake_answer { accept, refuse, wrong_id, wrong_type, hang_up, silent };

// Accepts one connection and answers as told; `asked` gets the request.
asio::awaitable<void> answer_rdma_connect(tcp::acceptor& acceptor, handshake_answer how, wire::rdma_endpoint reply,
                              std::optional<wire::rdma_connect_request>& asked) {
  tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
  wire::frame_header h;
  std::vector<std::byte> payload;
  if (co_await net::read_frame(socket, {}, /*response=*/false, h, payload) != net::frame_status::ok) co_return;
  wire::rdma_connect_request request;
  if (h.type == wire::message_type::rdma_connect && wire::decode_table(payload, request) == errc::success)
    asked = request;
  if (how == handshake_answer::hang_up) co_return;
  if (how == handshake_answer::silent) {
    std::array<std::byte, 1> byte{};  // until the initiator's deadline closes its end
    (void)co_await socket.async_read_some(asio::buffer(byte), asio::as_tuple(asio::use_awaitable));
    co_return;
  }
  const wire::rdma_connect_response reply_message{how == handshake_answer::refuse ? errc::no_space : errc::success, reply};
  std::vector<std::byte> frame;
  REQUIRE(net::append_frame(how == handshake_answer::wrong_type ? wire::message_type::query : wire::message_type::rdma_connect,
                            true, how == handshake_answer::wrong_id ? 2 : h.request_id, reply_message, frame) == errc::success);
  (void)co_await asio::async_write(socket, asio::buffer(frame), asio::as_tuple(asio::use_awaitable));
  // Keeps the connection until the initiator closes it.
  std::array<std::byte, 1> byte{};
  (void)co_await socket.async_read_some(asio::buffer(byte), asio::as_tuple(asio::use_awaitable));
}

struct rdma_exchange_outcome {
  corokv::transport::rdma_exchange_result result;
  std::optional<wire::rdma_connect_request> asked;
  std::chrono::steady_clock::duration took{};
};

rdma_exchange_outcome rdma_exchange_with(handshake_answer how, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  wire::rdma_endpoint own, theirs;
  own.qpn = 0x1234;
  own.psn = 0x55;
  own.mtu = 5;
  theirs.qpn = 0x777;
  theirs.psn = 0x99;
  theirs.mtu = 3;
  rdma_exchange_outcome out;
  asio::co_spawn(io, answer_rdma_connect(acceptor, how, theirs, out.asked), asio::detached);
  const auto started = std::chrono::steady_clock::now();
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        out.result = co_await corokv::transport::exchange_rdma_endpoints(acceptor.local_endpoint(), own, timeout);
        out.took = std::chrono::steady_clock::now() - started;
        if (out.result.link) out.result.link->close();  // lets the responder finish
        acceptor.close();
      },
      asio::detached);
  io.run();
  return out;
}

}  // namespace

TEST_CASE("rdma handshake: both ends agree on the smaller MTU and RDMA-read limits, at least one read each way") {
  const auto own = rdma_port_of(5, 16, 8);
  wire::rdma_endpoint other = corokv::transport::own_rdma_endpoint(rdma_port_of(3, 4, 2), 0xabc, 0x42);
  CHECK(other.qpn == 0xabc);
  CHECK(other.psn == 0x42);
  CHECK(other.gid[15] == 7);
  CHECK(other.lid == 3);
  const corokv::transport::rdma_agreement a = corokv::transport::agree(own, other);
  CHECK(a.qpn == 0xabc);
  CHECK(a.psn == 0x42);
  CHECK(a.lid == 3);
  CHECK(a.mtu == 3);
  CHECK(a.reads_out == 2);  // at most what the other end serves
  CHECK(a.reads_in == 4);   // the other end's outstanding reads, within ours
  // Zero limits still allow one read; an MTU out of range is brought in.
  other.responder_resources = 0;
  other.initiator_depth = 0;
  other.mtu = 0;
  const auto b = corokv::transport::agree(own, other);
  CHECK(b.reads_out == 1);
  CHECK(b.reads_in == 1);
  CHECK(b.mtu == corokv::transport::rdma_mtu_256);
  other.mtu = 9;
  CHECK(corokv::transport::agree(rdma_port_of(9, 1, 1), other).mtu == corokv::transport::rdma_mtu_4096);
}

TEST_CASE("rdma handshake: the responder admits peers up to its limit") {
  CHECK(corokv::transport::admit_rdma_peer(0, 2) == errc::success);
  CHECK(corokv::transport::admit_rdma_peer(1, 2) == errc::success);
  CHECK(corokv::transport::admit_rdma_peer(2, 2) == errc::no_space);
}

TEST_CASE("rdma handshake: an accepted exchange gives the responder's endpoint and keeps the connection") {
  const auto out = rdma_exchange_with(handshake_answer::accept);
  REQUIRE(out.asked);
  CHECK(out.asked->initiator.qpn == 0x1234);
  CHECK(out.asked->initiator.psn == 0x55);
  REQUIRE(out.result.responder);
  CHECK(out.result.responder->qpn == 0x777);
  CHECK(out.result.responder->psn == 0x99);
  REQUIRE(out.result.link);
}

TEST_CASE("rdma handshake: a refusal, a wrong answer or a peer that hangs up gives nothing and no connection") {
  for (handshake_answer how : {handshake_answer::refuse, handshake_answer::wrong_id, handshake_answer::wrong_type, handshake_answer::hang_up}) {
    const auto out = rdma_exchange_with(how);
    CHECK_MESSAGE(out.asked.has_value(), static_cast<int>(how));
    CHECK_FALSE_MESSAGE(out.result.responder.has_value(), static_cast<int>(how));
    CHECK_FALSE_MESSAGE(out.result.link, static_cast<int>(how));
  }
}

TEST_CASE("rdma handshake: a peer that never answers is given up at the deadline") {
  const auto out = rdma_exchange_with(handshake_answer::silent, std::chrono::milliseconds(200));
  CHECK(out.asked.has_value());
  CHECK_FALSE(out.result.responder.has_value());
  CHECK_FALSE(out.result.link);
  CHECK(out.took >= std::chrono::milliseconds(150));
  CHECK(out.took < std::chrono::seconds(4));
}
