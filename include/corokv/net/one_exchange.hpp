#pragma once
// A connection made within a deadline, and one framed exchange on it: what
// every client of the wire protocol does before its own traffic (the
// metadata endpoint, the data client, a follower, the RDMA handshake).
//
// The deadline closes the socket (socket_deadline.hpp), so a peer that
// never answers the connect, or never answers the request, cannot hold the
// caller past it.

#include <corokv/error.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/socket_deadline.hpp>
#include <corokv/types.hpp>
#include <corokv/wire/frame.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace corokv::net {

// Connects `socket` to `peer` (one endpoint, or a range of them tried in
// turn) within `timeout`, on the socket's executor; small frames then go
// out at once (no Nagle). False if it did not connect in time.
template <class Peer>
boost::asio::awaitable<bool> connect_within(std::shared_ptr<tcp::socket> socket, const Peer& peer, duration timeout) {
  socket_deadline deadline(socket->get_executor(), socket, timeout);
  boost::system::error_code ec;
  if constexpr (std::is_same_v<Peer, tcp::endpoint>) {
    std::tie(ec) = co_await socket->async_connect(peer, boost::asio::as_tuple(boost::asio::use_awaitable));
  } else {
    std::tie(ec, std::ignore) = co_await boost::asio::async_connect(*socket, peer, boost::asio::as_tuple(boost::asio::use_awaitable));
  }
  deadline.disarm();
  if (ec || deadline.fired()) co_return false;
  boost::system::error_code ignored;
  socket->set_option(tcp::no_delay(true), ignored);
  co_return true;
}

// Connects to `peer`, sends `request` as the frame of `type` (request id
// 1) and reads the one reply, which must be of the same type and id and
// decode as `response`; all within `timeout`. The socket stays open for
// the caller's own use. rpc_failed if the connection or the exchange
// failed or timed out, protocol_error if the reply is not the answer,
// invalid_argument if the request does not fit `lim`; otherwise the
// response's own status.
template <class Request, class Response>
boost::asio::awaitable<errc> connect_and_exchange(std::shared_ptr<tcp::socket> socket, const tcp::endpoint& peer,
                                           wire::message_type type, const Request& request, Response& response,
                                           duration timeout, const wire::limits& lim = {}) {
  std::vector<std::byte> frame;
  if (append_frame(type, false, 1, request, frame, lim) != errc::success) co_return errc::invalid_argument;
  socket_deadline deadline(socket->get_executor(), socket, timeout);
  auto [connect_ec] = co_await socket->async_connect(peer, boost::asio::as_tuple(boost::asio::use_awaitable));
  if (connect_ec) co_return errc::rpc_failed;
  boost::system::error_code ignored;
  socket->set_option(tcp::no_delay(true), ignored);
  auto [write_ec, written] = co_await boost::asio::async_write(*socket, boost::asio::buffer(frame), boost::asio::as_tuple(boost::asio::use_awaitable));
  if (write_ec) co_return errc::rpc_failed;
  wire::frame_header h;
  std::vector<std::byte> payload;
  const frame_status got = co_await read_frame(*socket, lim, /*response=*/true, h, payload);
  deadline.disarm();
  if (got != frame_status::ok || deadline.fired()) co_return got == frame_status::malformed ? errc::protocol_error
                                                                                            : errc::rpc_failed;
  if (h.type != type || h.request_id != 1 || wire::decode(payload, response, lim) != errc::success)
    co_return errc::protocol_error;
  co_return response.status;
}

}  // namespace corokv::net
