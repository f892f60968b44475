#pragma once
// Moving a whole buffer sequence over a socket with as few trips through the
// executor as the socket allows. Asio's composed read and write complete
// each partial step through the executor, and on an io_context that serves
// sockets every trip costs a pass through the reactor (epoll_wait); a
// loopback socket moves about 64 KiB per system call, so a 4 MiB reply
// would cost 64 such passes on each side. Here each system call moves all
// it can, the next follows at once, and the coroutine waits for readiness
// only when the socket has nothing to give or no room to take: one
// non-blocking read or write per chunk, one wait per real stall.
//
// The socket is switched to non-blocking mode. A socket closed meanwhile
// (a deadline, a stop) fails the next step with its error.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <cstddef>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

namespace corokv::net {

namespace detail {

// The not yet moved part of a sequence of buffers, up to 64 at a time (what
// one system call takes).
template <class Buffer>
class remaining_buffers {
 public:
  explicit remaining_buffers(std::span<const Buffer> all) : all_(all) {
    while (next_ < all_.size() && all_[next_].size() == 0) ++next_;
  }
  bool empty() const noexcept { return next_ >= all_.size(); }
  std::span<const Buffer> window() {
    std::size_t n = 0;
    for (std::size_t k = next_; k < all_.size() && n < window_.size(); ++k) {
      window_[n] = all_[k];
      if (k == next_) window_[n] += offset_;
      ++n;
    }
    return {window_.data(), n};
  }
  void consume(std::size_t bytes) {
    while (bytes > 0 && next_ < all_.size()) {
      const std::size_t left = all_[next_].size() - offset_;
      if (bytes < left) {
        offset_ += bytes;
        return;
      }
      bytes -= left;
      offset_ = 0;
      ++next_;
    }
    while (next_ < all_.size() && all_[next_].size() == 0) ++next_;
  }

 private:
  std::span<const Buffer> all_;
  std::size_t next_ = 0, offset_ = 0;
  std::array<Buffer, 64> window_{};
};

// The one loop behind read_fully and write_fully: a non-blocking step as
// long as the socket moves bytes, a wait for readiness when it does not.
template <class Buffer, class Step>
boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> move_fully(
    boost::asio::ip::tcp::socket& socket, std::span<const Buffer> buffers, boost::asio::socket_base::wait_type ready,
    Step step) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  std::size_t total = 0;
  if (!socket.non_blocking()) socket.non_blocking(true, ec);
  remaining_buffers<Buffer> left(buffers);
  while (!ec && !left.empty()) {
    const std::size_t n = step(left.window(), ec);
    if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
      std::tie(ec) = co_await socket.async_wait(ready, boost::asio::as_tuple(boost::asio::use_awaitable));
      continue;
    }
    total += n;
    left.consume(n);
  }
  co_return std::pair{ec, total};
}

}  // namespace detail

// Reads until every buffer is full. Returns the error that stopped it (eof
// if the peer closed first) and the bytes read.
inline boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_fully(
    boost::asio::ip::tcp::socket& socket, std::span<const boost::asio::mutable_buffer> buffers) {
  return detail::move_fully(socket, buffers, boost::asio::socket_base::wait_read,
                            [s = &socket](std::span<const boost::asio::mutable_buffer> window,
                                          boost::system::error_code& ec) { return s->read_some(window, ec); });
}

// Writes every buffer. Returns the error that stopped it and the bytes
// written.
inline boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> write_fully(
    boost::asio::ip::tcp::socket& socket, std::span<const boost::asio::const_buffer> buffers) {
  return detail::move_fully(socket, buffers, boost::asio::socket_base::wait_write,
                            [s = &socket](std::span<const boost::asio::const_buffer> window,
                                          boost::system::error_code& ec) { return s->write_some(window, ec); });
}

}  // namespace corokv::net
