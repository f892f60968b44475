#pragma once
// Reading and building whole frames on a stream, shared by every server and
// client of the wire protocol. The header is read and checked before any
// payload byte is read or any buffer is sized from it.

#include <corokv/error.hpp>
#include <corokv/wire/frame.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <system_error>
#include <vector>

namespace corokv::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// Why a frame could not be read.
enum class frame_status {
  ok,
  ended,      // the connection ended between frames: not a byte of a new one came
  closed,     // the connection ended inside a frame, or the socket was closed
  malformed,  // the header failed its checks, or came in the wrong direction
};

// Reads one frame whose direction is `response`.
template <class Stream>
asio::awaitable<frame_status> read_frame(Stream& stream, const wire::limits& lim, bool response,
                                         wire::frame_header& header, std::vector<std::byte>& payload) {
  std::array<std::byte, wire::header_size> head{};
  auto [ec, n] = co_await asio::async_read(stream, asio::buffer(head), asio::as_tuple(asio::use_awaitable));
  if (ec) co_return n == 0 && ec != asio::error::operation_aborted ? frame_status::ended : frame_status::closed;
  if (wire::decode_header(head, lim, header) != errc::success || header.response != response)
    co_return frame_status::malformed;
  payload.resize(header.payload_size);
  auto [payload_ec, m] = co_await asio::async_read(stream, asio::buffer(payload), asio::as_tuple(asio::use_awaitable));
  co_return payload_ec ? frame_status::closed : frame_status::ok;
}

// Appends one frame (header and encoded message) to `out`. invalid_argument
// if the message exceeds the limits; `out` is then left as it was.
template <class Message>
errc append_frame(wire::message_type type, bool response, std::uint64_t id, const Message& message,
                  std::vector<std::byte>& out, const wire::limits& lim = {}) {
  const std::size_t start = out.size();
  out.resize(start + wire::header_size);
  const errc e = wire::encode(message, out, lim);
  const std::size_t payload = out.size() - start - wire::header_size;
  if (e != errc::success || payload > lim.max_payload) {
    out.resize(start);
    return errc::invalid_argument;
  }
  const auto header = wire::encode_header({type, response, id, static_cast<std::uint32_t>(payload)});
  std::copy(header.begin(), header.end(), out.begin() + static_cast<std::ptrdiff_t>(start));
  return errc::success;
}

}  // namespace corokv::net
