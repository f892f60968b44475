#pragma once
// Reading and building whole frames on a stream, shared by every server and
// client of the wire protocol. The header is read and checked before any
// payload byte is read or any buffer is sized from it.

#include <corokv/error.hpp>
#include <corokv/net/bulk_io.hpp>
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
#include <limits>
#include <system_error>
#include <vector>

namespace corokv::net {

using tcp = boost::asio::ip::tcp;

// Asio's read and write loops move at most 64 KiB per system call unless
// told otherwise (transfer_all caps each step there). A data frame of
// megabytes would then cost one system call, and one reactor wake-up on
// each side, per 64 KiB. With this condition each step moves all that is
// left (up to Asio's 64 buffers per call).
struct transfer_all_at_once {
  std::size_t operator()(const boost::system::error_code& ec, std::size_t) const noexcept {
    return ec ? 0 : std::numeric_limits<std::size_t>::max();
  }
};

// Why a frame could not be read.
enum class frame_status {
  ok,
  ended,      // the connection ended between frames: not a byte of a new one came
  closed,     // the connection ended inside a frame, or the socket was closed
  malformed,  // the header failed its checks, or came in the wrong direction
};

// Reads one frame whose direction is `response`.
template <class Stream>
boost::asio::awaitable<frame_status> read_frame(Stream& stream, const wire::limits& lim, bool response,
                                         wire::frame_header& header, std::vector<std::byte>& payload) {
  std::array<std::byte, wire::header_size> head{};
  auto [ec, n] = co_await boost::asio::async_read(stream, boost::asio::buffer(head), boost::asio::as_tuple(boost::asio::use_awaitable));
  if (ec) co_return n == 0 && ec != boost::asio::error::operation_aborted ? frame_status::ended : frame_status::closed;
  if (wire::decode_header(head, lim, header) != errc::success || header.response != response)
    co_return frame_status::malformed;
  payload.resize(header.payload_size);
  auto [payload_ec, m] = co_await boost::asio::async_read(stream, boost::asio::buffer(payload), transfer_all_at_once{},
                                                   boost::asio::as_tuple(boost::asio::use_awaitable));
  co_return payload_ec ? frame_status::closed : frame_status::ok;
}

// Reads one frame whose payload must be exactly `payload_size` bytes (a
// data reply, whose table's size follows from the request): header and
// payload in one read. Any other size is malformed. The payload is
// frame[header_size..].
inline boost::asio::awaitable<frame_status> read_frame_of_size(tcp::socket& stream, const wire::limits& lim, bool response,
                                                        std::size_t payload_size, wire::frame_header& header,
                                                        std::vector<std::byte>& frame) {
  frame.resize(wire::header_size + payload_size);
  const boost::asio::mutable_buffer whole = boost::asio::buffer(frame);
  auto [ec, n] = co_await read_fully(stream, std::span(&whole, 1));
  if (ec && n < wire::header_size)
    co_return n == 0 && ec != boost::asio::error::operation_aborted ? frame_status::ended : frame_status::closed;
  if (wire::decode_header(frame, lim, header) != errc::success || header.response != response ||
      header.payload_size != payload_size)
    co_return frame_status::malformed;
  co_return ec ? frame_status::closed : frame_status::ok;
}

// Buffers for one gathered or scattered transfer; ranges that continue one
// another in memory (neighbouring objects, neighbouring destinations) become
// one, so a batch of small values takes as few system calls as one large.
template <class Buffer>
void append_coalesced(std::vector<Buffer>& out, Buffer b) {
  if (!out.empty()) {
    Buffer& last = out.back();
    if (static_cast<const std::byte*>(last.data()) + last.size() == static_cast<const std::byte*>(b.data())) {
      last = Buffer(last.data(), last.size() + b.size());
      return;
    }
  }
  out.push_back(b);
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
