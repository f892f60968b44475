#pragma once
// A device's asynchronous events (a queue pair gone to error, a port down,
// a fatal device error), awaited on an Asio executor: the context's
// async_fd is made non-blocking and waited on with a stream_descriptor, as
// the completion channel is. next() returns one event, which the caller
// acknowledges with ibv_ack_async_event once it has acted on it.

#include <corokv/io/verbs.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cerrno>
#include <system_error>

namespace corokv::io::verbs {

class device_events {
 public:
  device_events(boost::asio::any_io_executor ex, ibv_context* context, std::error_code& ec)
      : context_(context), descriptor_(ex) {
    if ((ec = make_non_blocking(context->async_fd))) return;
    boost::system::error_code assign_ec;
    descriptor_.assign(context->async_fd, assign_ec);
    if (assign_ec) ec = std::error_code(assign_ec.value(), std::generic_category());
  }
  device_events(const device_events&) = delete;
  device_events& operator=(const device_events&) = delete;
  ~device_events() {
    close();
    if (descriptor_.is_open()) (void)descriptor_.release();  // the context owns the fd
  }

  // As completion_queue::close: on the executor next() runs on.
  void close() {
    closed_ = true;
    boost::system::error_code ignored;
    if (descriptor_.is_open()) descriptor_.cancel(ignored);
  }

  boost::asio::awaitable<std::error_code> next(ibv_async_event& out) {
    for (;;) {
      if (closed_) co_return std::make_error_code(std::errc::operation_canceled);
      if (ibv_get_async_event(context_, &out) == 0) co_return std::error_code{};
      if (errno != EAGAIN && errno != EWOULDBLOCK) co_return last_error();
      auto [ec] = co_await descriptor_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                                  boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) co_return std::make_error_code(std::errc::operation_canceled);
    }
  }

 private:
  ibv_context* context_;
  boost::asio::posix::stream_descriptor descriptor_;
  std::atomic<bool> closed_{false};
};

}  // namespace corokv::io::verbs
