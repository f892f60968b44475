#pragma once
// An io_uring awaited on an Asio executor: no thread polls it. An eventfd
// is registered with the ring and waited on with a posix::stream_descriptor
// on the executor the queue was opened with, and only while requests are
// in flight, so an io_context with nothing else to do still returns from
// run().
//
// A batch of requests (reads, writes, fsyncs) is submitted at once and
// completes, on the awaiting coroutine's executor, once every request has
// its completion. At most half the completion queue's entries are in the
// kernel at a time (the other half is room for cancellations), so the
// completion queue never overflows; requests beyond that wait in line, in
// order, and go in as completions are taken. Cancelling the awaiting coroutine (a terminal
// cancellation) submits an IORING_OP_ASYNC_CANCEL for each request still
// out, and the batch still completes only after each cancelled request's
// own completion arrived: nothing the kernel could still write to is left
// behind. Requests that finished anyway keep their results.
//
// Thread-safe: the rings' submission and completion sides are used under
// one mutex, so batches may come from any thread.
//
// io_uring refused (a kernel without it, kernel.io_uring_disabled, a
// seccomp filter): open() fails with the kernel's error, never a fallback.

#include <corokv/detail/posted_completion.hpp>
#include <corokv/error.hpp>

#include <liburing.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <tuple>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

namespace corokv::io {

struct uring_options {
  unsigned entries = 256;  // submission queue slots (the completion queue has twice as many)
};

struct uring_stats {
  std::uint64_t batches = 0;
  std::uint64_t submitted = 0;        // requests handed to the kernel
  std::uint64_t completed = 0;        // their completions
  std::uint64_t cancel_requests = 0;  // IORING_OP_ASYNC_CANCEL submitted
  std::uint64_t wakeups = 0;          // the eventfd woke the executor
  std::uint64_t submit_refusals = 0;  // io_uring_enter refused a submission for now (retried)
  std::uint64_t queued = 0;           // requests that waited in line for room in the kernel
};

// One request of a batch. `file` is a descriptor, or the index of a file
// registered with register_files() when fixed_file is set; `buffer_index`
// names a buffer registered with register_buffers() that [data, data +
// length) lies in (read_fixed / write_fixed), or is -1.
struct uring_request {
  enum class kind : std::uint8_t { read, write, fsync };
  kind op = kind::read;
  int file = -1;
  bool fixed_file = false;
  int buffer_index = -1;
  void* data = nullptr;
  std::uint32_t length = 0;
  std::uint64_t offset = 0;
  // Set on completion: bytes moved (or 0 for fsync), or -errno. A request
  // cancelled before it ran reads -ECANCELED.
  int result = 0;
};

class uring_queue : public std::enable_shared_from_this<uring_queue> {
  struct private_tag {};

 public:
  // The ring, its eventfd and their waiter on `ex`. On failure `ec` holds
  // the kernel's answer (ENOSYS, EPERM, ENOMEM, ...) and the result is null.
  static std::shared_ptr<uring_queue> open(boost::asio::any_io_executor ex, uring_options options,
                                           std::error_code& ec) {
    auto q = std::make_shared<uring_queue>(private_tag{}, std::move(ex));
    ec = q->init(options);
    if (ec) return nullptr;
    return q;
  }

  uring_queue(private_tag, boost::asio::any_io_executor ex)
      : executor_(std::move(ex)), strand_(boost::asio::make_strand(executor_)), eventfd_(strand_) {}
  uring_queue(const uring_queue&) = delete;
  uring_queue& operator=(const uring_queue&) = delete;
  // Batches hold the queue: it is destroyed once none is in flight.
  ~uring_queue() {
    boost::system::error_code ignored;
    if (eventfd_.is_open()) eventfd_.close(ignored);
    if (ring_open_) io_uring_queue_exit(&ring_);
  }

  // Registered files and buffers: requests name them by index. Call before
  // the first batch that uses them; each may be called once.
  std::error_code register_files(std::span<const int> fds) {
    std::lock_guard lock(mu_);
    return result_code(io_uring_register_files(&ring_, fds.data(), static_cast<unsigned>(fds.size())));
  }
  std::error_code register_buffers(std::span<const iovec> buffers) {
    std::lock_guard lock(mu_);
    return result_code(io_uring_register_buffers(&ring_, buffers.data(), static_cast<unsigned>(buffers.size())));
  }
  // Or a table of `slots` empty buffer slots (Linux 5.19 and later), filled
  // and emptied one at a time with update_buffer, also while requests are
  // in flight: a request keeps the buffer it was submitted with.
  std::error_code register_buffer_table(unsigned slots) {
    std::lock_guard lock(mu_);
    return result_code(io_uring_register_buffers_sparse(&ring_, slots));
  }
  // Puts `buffer` in `slot`; an empty iovec ({nullptr, 0}) empties it.
  std::error_code update_buffer(unsigned slot, const iovec& buffer) {
    std::lock_guard lock(mu_);
    return result_code(io_uring_register_buffers_update_tag(&ring_, slot, &buffer, nullptr, 1));
  }

  uring_stats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }
  std::size_t in_flight() const {
    std::lock_guard lock(mu_);
    return active_.size();
  }

  // Submits every request and completes with an empty error_code once each
  // has its result; with errc::cancelled (from error.hpp's category) if a
  // terminal cancellation arrived first. The requests stay the caller's and
  // must live until then.
  template <class Token>
  auto async_run(std::span<uring_request> requests, Token&& token) {
    return boost::asio::async_initiate<Token, void(std::error_code)>(
        [](auto handler, std::shared_ptr<uring_queue> q, std::span<uring_request> reqs) {
          q->start(std::move(handler), reqs);
        },
        token, shared_from_this(), requests);
  }
  boost::asio::awaitable<std::error_code> run(std::span<uring_request> requests) {
    auto [ec] = co_await async_run(requests, boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return ec;
  }

 private:
  struct batch;
  // Where a request's user_data points.
  struct tag {
    batch* owner = nullptr;
    std::uint32_t index = 0;
    bool submitted = false;
    bool done = false;
  };
  struct batch {
    std::span<uring_request> requests;
    std::vector<tag> tags;
    std::size_t unfinished = 0;
    bool cancelled = false;
    // Cancel requests not yet answered: they name this batch's tags, so it
    // lives (in cancelling_) until each is answered, and no later request
    // can have a tag's address while a cancel may still match it.
    unsigned cancels_out = 0;
    std::unique_ptr<detail::posted_completion> handler;
  };
  // A cancel request's user_data: its batch's address with the low bit set
  // (tags and batches are aligned, so a request's never has it).
  static constexpr std::uintptr_t cancel_mark = 1;

  static std::error_code result_code(int r) {
    return r < 0 ? std::error_code(-r, std::system_category()) : std::error_code{};
  }

  std::error_code init(const uring_options& options) {
    const int r = io_uring_queue_init(options.entries ? options.entries : 1, &ring_, 0);
    if (r < 0) return result_code(r);
    ring_open_ = true;
    capacity_ = std::max(1u, ring_.cq.ring_entries / 2);
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return {errno, std::system_category()};
    boost::system::error_code assign_ec;
    eventfd_.assign(efd, assign_ec);
    if (assign_ec) {
      ::close(efd);
      return {assign_ec.value(), std::system_category()};
    }
    return result_code(io_uring_register_eventfd(&ring_, efd));
  }

  template <class Handler>
  void start(Handler handler, std::span<uring_request> requests) {
    namespace asio = boost::asio;
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto b = std::make_shared<batch>();
    b->requests = requests;
    b->handler = detail::posted_completion::make(std::move(handler), executor_);
    b->tags.resize(requests.size());
    for (std::uint32_t i = 0; i < requests.size(); ++i) b->tags[i] = {b.get(), i};
    bool start_pump = false, refused = false;
    {
      std::lock_guard lock(mu_);
      ++stats_.batches;
      b->unfinished = requests.size();
      if (requests.empty()) {
        finish_locked(b);
      } else {
        active_.insert(b);
        // The handler stays in the slot until the awaiting coroutine reuses
        // it (slots are not thread-safe: never cleared from here); once the
        // batch is done it does nothing.
        if (slot.is_connected()) {
          slot.assign([weak = std::weak_ptr<uring_queue>(shared_from_this()), b](asio::cancellation_type type) {
            if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none) return;
            if (auto q = weak.lock()) q->cancel(b);
          });
        }
        submit_locked(*b);
        reap_locked();  // reads from the page cache complete inside submit
        refused = refused_locked();
        if (busy_locked(refused) && !pump_running_) start_pump = pump_running_ = true;
      }
    }
    if (refused) wake_pump();
    deliver();
    if (start_pump) asio::co_spawn(strand_, pump(shared_from_this()), asio::detached);
  }

  void submit_locked(batch& b) {
    for (tag& t : b.tags) waiting_.push_back(&t);
    if (waiting_.size() > b.tags.size() || b.tags.size() > capacity_ - std::min(capacity_, outstanding_))
      stats_.queued += b.tags.size();
    submit_waiting_locked();
  }

  // Moves requests from the line into the kernel while there is room.
  void submit_waiting_locked() {
    while (!waiting_.empty() && outstanding_ < capacity_) {
      io_uring_sqe* sqe = sqe_locked();
      if (!sqe) break;  // the kernel took nothing: the pump tries again
      tag& t = *waiting_.front();
      waiting_.pop_front();
      prepare(sqe, t.owner->requests[t.index]);
      io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(&t));
      t.submitted = true;
      ++outstanding_;
      ++stats_.submitted;
    }
    flush_locked();
  }

  // Hands the prepared entries to the kernel. A refusal (EBUSY, EAGAIN:
  // completions it cannot post yet) leaves them in the ring, where the
  // next submission or the pump, once completions are taken, hands them
  // over again: they are never answered here, the kernel may still run them.
  void flush_locked() {
    if (io_uring_sq_ready(&ring_) == 0) return;
    if (io_uring_submit(&ring_) < 0) ++stats_.submit_refusals;
  }

  // A free submission entry; when the queue is full, what it holds is
  // handed to the kernel first. Null if the kernel took nothing.
  io_uring_sqe* sqe_locked() {
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
    flush_locked();
    return io_uring_get_sqe(&ring_);
  }

  // Entries the kernel refused are still in the ring. With nothing of ours
  // in flight no completion would wake the pump to hand them over again:
  // wake it by hand (it then retries on a short timer).
  bool refused_locked() { return io_uring_sq_ready(&ring_) > 0; }
  void wake_pump() { ::eventfd_write(eventfd_.native_handle(), 1); }

  static void prepare(io_uring_sqe* sqe, const uring_request& r) {
    switch (r.op) {
      case uring_request::kind::read:
        if (r.buffer_index >= 0)
          io_uring_prep_read_fixed(sqe, r.file, r.data, r.length, r.offset, r.buffer_index);
        else
          io_uring_prep_read(sqe, r.file, r.data, r.length, r.offset);
        break;
      case uring_request::kind::write:
        if (r.buffer_index >= 0)
          io_uring_prep_write_fixed(sqe, r.file, r.data, r.length, r.offset, r.buffer_index);
        else
          io_uring_prep_write(sqe, r.file, r.data, r.length, r.offset);
        break;
      case uring_request::kind::fsync:
        io_uring_prep_fsync(sqe, r.file, IORING_FSYNC_DATASYNC);
        break;
    }
    if (r.fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
  }

  void cancel(const std::shared_ptr<batch>& b) {
    bool refused = false;
    {
      std::lock_guard lock(mu_);
      if (b->cancelled || !active_.count(b)) return;
      b->cancelled = true;
      // Still in line: never reached the kernel, answered here.
      std::erase_if(waiting_, [&](tag* t) { return t->owner == b.get(); });
      for (tag& t : b->tags)
        if (!t.submitted) complete_one_locked(t, -ECANCELED);
      for (tag& t : b->tags) {
        if (t.done) continue;
        io_uring_sqe* sqe = sqe_locked();
        if (!sqe) break;  // the request will complete on its own
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(&t), 0);
        io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(b.get()) | cancel_mark);
        ++b->cancels_out;
        ++outstanding_;
        ++stats_.cancel_requests;
      }
      if (b->cancels_out) cancelling_.insert(b);
      flush_locked();
      reap_locked();
      refused = refused_locked();
    }
    if (refused) wake_pump();
    deliver();
  }

  // Takes every completion there is, then lets waiting requests in;
  // batches that are whole move to ready_.
  void reap_locked() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      unsigned head = 0, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        const auto user = io_uring_cqe_get_data64(cqe);
        if (user & cancel_mark) {
          cancel_answered_locked(reinterpret_cast<batch*>(static_cast<std::uintptr_t>(user & ~cancel_mark)));
          continue;
        }
        ++stats_.completed;
        complete_one_locked(*reinterpret_cast<tag*>(static_cast<std::uintptr_t>(user)), cqe->res);
      }
      if (seen) io_uring_cq_advance(&ring_, seen);
      outstanding_ -= std::min(outstanding_, seen);
      // Never expected (in flight is bounded), but completions the kernel
      // kept aside must not be left there.
      if (io_uring_cq_has_overflow(&ring_)) {
        io_uring_get_events(&ring_);
        continue;
      }
      if (seen == 0) break;
      // Room came free: let waiting requests in, then look again (some
      // complete inside the submission).
      if (!waiting_.empty()) submit_waiting_locked();
    }
  }

  void complete_one_locked(tag& t, int res) {
    if (t.done) return;
    t.done = true;
    batch& b = *t.owner;
    b.requests[t.index].result = res;
    if (--b.unfinished != 0) return;
    // Find the owning pointer: batches are few at a time.
    for (auto it = active_.begin(); it != active_.end(); ++it)
      if (it->get() == &b) {
        auto owned = *it;
        active_.erase(it);
        finish_locked(owned);
        return;
      }
  }

  void finish_locked(const std::shared_ptr<batch>& b) { ready_.push_back(b); }

  void cancel_answered_locked(batch* b) {
    for (auto it = cancelling_.begin(); it != cancelling_.end(); ++it)
      if (it->get() == b) {
        if (--b->cancels_out == 0) cancelling_.erase(it);
        return;
      }
  }

  // Whether the pump has anything to wait for: requests or cancel requests
  // in the kernel, or entries it refused (still in the ring: handed over
  // again on the pump's retry timer).
  bool busy_locked(bool refused) const { return !active_.empty() || !cancelling_.empty() || refused; }

  // Outside the lock: hands finished batches their results on their own
  // executors.
  void deliver() {
    std::vector<std::shared_ptr<batch>> ready;
    {
      std::lock_guard lock(mu_);
      ready.swap(ready_);
    }
    for (auto& b : ready) {
      const std::error_code ec = b->cancelled ? std::error_code(errc::cancelled) : std::error_code{};
      std::unique_ptr<detail::posted_completion> handler = std::move(b->handler);
      handler->post(ec);
    }
  }

  // While requests are in flight: waits for the eventfd, then takes the
  // completions. The count is read before the completion queue, so a
  // completion posted meanwhile writes the eventfd again.
  static boost::asio::awaitable<void> pump(std::shared_ptr<uring_queue> q) {
    boost::asio::steady_timer retry(q->strand_);
    bool refused = false;
    for (;;) {
      boost::system::error_code ec;
      if (refused) {
        // The kernel refused a submission: try again shortly.
        retry.expires_after(std::chrono::milliseconds(1));
        std::tie(ec) = co_await retry.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        ec = {};
      } else {
        std::tie(ec) = co_await q->eventfd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                                       boost::asio::as_tuple(boost::asio::use_awaitable));
      }
      std::uint64_t count = 0;
      while (::read(q->eventfd_.native_handle(), &count, sizeof count) > 0) {
      }
      if (ec) {
        // The wait itself failed (the reactor refused the fd): requests in
        // flight may still write to their buffers, so this coroutine waits
        // for them on the eventfd with poll(2), blocking its thread (the
        // reactor cannot wait for it) but not the queue's lock: threads may
        // still start and cancel batches meanwhile.
        for (;;) {
          bool busy = false;
          {
            std::lock_guard lock(q->mu_);
            q->flush_locked();
            q->reap_locked();
            busy = q->busy_locked(q->refused_locked());
          }
          q->deliver();
          if (!busy) break;
          ::pollfd p{q->eventfd_.native_handle(), POLLIN, 0};
          if (::poll(&p, 1, 10) < 0 && errno != EINTR) break;
          while (::read(q->eventfd_.native_handle(), &count, sizeof count) > 0) {
          }
        }
      }
      bool more = false;
      {
        std::lock_guard lock(q->mu_);
        ++q->stats_.wakeups;
        q->flush_locked();
        q->reap_locked();
        refused = q->refused_locked();
        more = q->busy_locked(refused);
        if (!more) q->pump_running_ = false;
      }
      q->deliver();
      if (!more) co_return;
    }
  }

  boost::asio::any_io_executor executor_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;  // the pump
  boost::asio::posix::stream_descriptor eventfd_;
  io_uring ring_{};
  bool ring_open_ = false;
  mutable std::mutex mu_;
  std::unordered_set<std::shared_ptr<batch>> active_;
  std::unordered_set<std::shared_ptr<batch>> cancelling_;  // batches with cancel requests unanswered
  std::vector<std::shared_ptr<batch>> ready_;
  std::deque<tag*> waiting_;      // requests not yet in the kernel, in order
  unsigned capacity_ = 1;         // entries in the kernel at most (half the completion queue)
  unsigned outstanding_ = 0;      // entries in the kernel: requests and cancellations
  bool pump_running_ = false;
  uring_stats stats_;
};

}  // namespace corokv::io
