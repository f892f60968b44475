#pragma once
// A verbs completion queue awaited on an Asio executor: no thread polls it.
// Its completion channel's fd is made non-blocking and waited on with a
// posix::stream_descriptor. The queue is armed when made; wait() returns
// once the device signalled an event, after taking the events, acknowledging
// them in batches and arming again, so that the caller's poll until empty
// cannot miss a completion that arrives meanwhile.
//
// wait() and drain() are called by one coroutine at a time (the lane's
// completion pump); close() and the destructor from anywhere that owns it.
// Teardown order: the wait is cancelled, the fd is taken back from Asio
// (the channel closes it), unacknowledged events are acknowledged, the
// queue and the channel are destroyed.

#include <corokv/io/verbs.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <system_error>

namespace corokv::io::verbs {

class completion_queue {
 public:
  static constexpr unsigned ack_batch = 64;  // ibv_ack_cq_events takes a mutex: not once per event

  completion_queue(boost::asio::any_io_executor ex, ibv_context* context, int depth, std::error_code& ec)
      : descriptor_(ex) {
    channel_ = ibv_create_comp_channel(context);
    if (!channel_) {
      ec = last_error();
      return;
    }
    cq_ = ibv_create_cq(context, depth, nullptr, channel_, 0);
    if (!cq_) {
      ec = last_error();
      return;
    }
    if ((ec = make_non_blocking(channel_->fd))) return;
    boost::system::error_code assign_ec;
    descriptor_.assign(channel_->fd, assign_ec);
    if (assign_ec) {
      ec = std::error_code(assign_ec.value(), std::generic_category());
      return;
    }
    // Armed before anything is posted: the first completion makes an event.
    if (ibv_req_notify_cq(cq_, 0) != 0) ec = last_error();
  }
  completion_queue(const completion_queue&) = delete;
  completion_queue& operator=(const completion_queue&) = delete;
  ~completion_queue() {
    close();
    if (descriptor_.is_open()) (void)descriptor_.release();  // the channel owns the fd
    if (cq_) {
      if (unacknowledged_) ibv_ack_cq_events(cq_, unacknowledged_);
      ibv_destroy_cq(cq_);
    }
    if (channel_) ibv_destroy_comp_channel(channel_);
  }

  ibv_cq* get() const noexcept { return cq_; }
  // Completions it holds at once (at least the depth asked for).
  std::size_t capacity() const noexcept { return cq_ ? static_cast<std::size_t>(cq_->cqe) : 0; }

  // Cancels a wait in progress (it returns operation_aborted). Call it on
  // the executor wait() runs on, so that it cannot fall between wait()'s
  // check and its start of waiting.
  void close() {
    closed_ = true;
    boost::system::error_code ignored;
    if (descriptor_.is_open()) descriptor_.cancel(ignored);
  }

  // Until the device signals: then events taken, acknowledged in batches,
  // and the queue armed again. The caller polls until empty next. It always
  // waits through the reactor first, even with an event already pending, so
  // that a steady stream of completions never keeps the executor from its
  // other work (Soft-RoCE completes work requests inside ibv_post_send).
  boost::asio::awaitable<std::error_code> wait() {
    for (;;) {
      if (closed_) co_return std::make_error_code(std::errc::operation_canceled);
      auto [ec] = co_await descriptor_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                                  boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec || closed_) co_return std::make_error_code(std::errc::operation_canceled);
      ibv_cq* which = nullptr;
      void* context = nullptr;
      bool got = false;
      while (ibv_get_cq_event(channel_, &which, &context) == 0) {
        got = true;
        if (++unacknowledged_ >= ack_batch) {
          ibv_ack_cq_events(cq_, unacknowledged_);
          unacknowledged_ = 0;
        }
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) co_return last_error();
      if (got) {
        if (ibv_req_notify_cq(cq_, 0) != 0) co_return last_error();
        co_return std::error_code{};
      }
    }
  }

  // Polls until the queue is empty, calling on_completion(const ibv_wc&)
  // for each completion; returns how many there were.
  template <class F>
  std::size_t drain(F&& on_completion) {
    std::array<ibv_wc, 32> wc{};
    std::size_t total = 0;
    for (;;) {
      const int n = ibv_poll_cq(cq_, static_cast<int>(wc.size()), wc.data());
      if (n <= 0) return total;
      for (int i = 0; i < n; ++i) on_completion(wc[static_cast<std::size_t>(i)]);
      total += static_cast<std::size_t>(n);
    }
  }

 private:
  boost::asio::posix::stream_descriptor descriptor_;
  ibv_comp_channel* channel_ = nullptr;
  ibv_cq* cq_ = nullptr;
  unsigned unacknowledged_ = 0;
  std::atomic<bool> closed_{false};
};

}  // namespace corokv::io::verbs
