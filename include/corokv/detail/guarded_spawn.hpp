#pragma once
// Runs a piece of work (an awaitable) on a strand and completes a handler
// on the handler's own executor, as boost::asio::co_spawn does, but safe to cancel
// with Asio 1.81 (Debian's; the floor of this library).
//
// Why a bare co_spawn is not (boost/asio/impl/co_spawn.hpp, 1.81): for a
// handler with a connected cancellation slot, co_spawn emplaces a
// co_spawn_cancellation_handler in that slot; it owns the signal the
// spawned coroutine listens to. When the handler has an associated executor
// (an awaiting coroutine's always has), that cancellation handler does not
// emit when called: it dispatches `[sig = &signal_] { sig->emit(type); }`
// to the spawned coroutine's executor. Called from anywhere else, that
// function is queued holding a raw pointer into the caller's slot, and
// nothing keeps the slot's handler alive until it runs. If the work's
// completion is queued there ahead of it (a socket read that just completed
// is about to end the work), the completion runs first: the caller resumes,
// its slot is cleared (awaitable_async_op_handler::operator() calls
// clear_cancellation_slot), the cancellation handler and its signal are
// destroyed and their memory is freed or taken by the caller's next
// operation. The queued function then emits through a dangling signal:
// a virtual call through whatever lies there now, a jump to address 0 in
// issue 22 (a cancellation storm from Python). Asio issue 1332, fixed after
// 1.81.
//
// The guard: a cancellation_bridge stands between the caller's slot and
// co_spawn. The caller's slot holds only a shared pointer to the bridge; a
// request is dispatched to the strand with shared ownership, and emitted
// there on the bridge's own signal, and only while the work has not
// finished. co_spawn's cancellation handler sits in the bridge's slot and
// is therefore called only on the strand, where its own dispatch runs
// inline: no pointer is ever left waiting in a queue. (The store's own
// operations, detail/async_operation.hpp, start through the same bridge.)
//
// A cancellation then reaches the work as it would through co_spawn: its
// pending operation is cancelled, and with throw_if_cancelled (Asio's
// default for a new coroutine) its next co_await throws operation_aborted.
// run_on() gives the work the awaiting coroutine's throw_if_cancelled
// instead, so that work run elsewhere behaves as it would inline.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

namespace corokv::detail {

using spawn_strand = boost::asio::strand<boost::asio::any_io_executor>;

// Sits between the caller's cancellation slot and work running on a strand.
// A request is remembered at once (the work can ask for it even before it
// started: requested()) and forwarded to the work on that strand, unless
// the work has finished by then. As with all Asio cancellation, the caller
// emits serialised with the completion (from the handler's executor).
class cancellation_bridge : public std::enable_shared_from_this<cancellation_bridge> {
 public:
  explicit cancellation_bridge(spawn_strand strand) : strand_(std::move(strand)) {}

  void request(boost::asio::cancellation_type type) {
    requested_.fetch_or(static_cast<unsigned>(type), std::memory_order_acq_rel);
    boost::asio::dispatch(strand_, [self = shared_from_this(), type] {
      if (!self->finished_) self->signal_.emit(type);
    });
  }
  bool requested() const noexcept { return requested_.load(std::memory_order_acquire) != 0; }
  boost::asio::cancellation_slot slot() noexcept { return signal_.slot(); }
  const spawn_strand& strand() const noexcept { return strand_; }

  // Called on the strand as the work ends: later requests are dropped.
  void finish() noexcept { finished_ = true; }

 private:
  spawn_strand strand_;
  boost::asio::cancellation_signal signal_;
  std::atomic<unsigned> requested_{0};
  bool finished_ = false;  // strand state
};

// Runs the work and marks its bridge finished on the way out, on the
// strand, however the work ends.
template <class T>
boost::asio::awaitable<T> finishing(boost::asio::awaitable<T> work, std::shared_ptr<cancellation_bridge> bridge) {
  struct on_exit {
    cancellation_bridge& bridge;
    ~on_exit() { bridge.finish(); }
  } mark{*bridge};
  co_return co_await std::move(work);
}

// The handler co_spawn completes: the caller's, with its executor (or the
// strand's, as co_spawn would use) and allocator, but the bridge's slot.
// Once called, the caller's slot no longer leads anywhere.
template <class Handler>
class bridged_handler {
 public:
  bridged_handler(Handler handler, boost::asio::any_io_executor fallback, std::shared_ptr<cancellation_bridge> bridge)
      : handler_(std::move(handler)), fallback_(std::move(fallback)), bridge_(std::move(bridge)) {}

  using executor_type = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
  executor_type get_executor() const noexcept { return boost::asio::get_associated_executor(handler_, fallback_); }

  using allocator_type = boost::asio::associated_allocator_t<Handler>;
  allocator_type get_allocator() const noexcept { return boost::asio::get_associated_allocator(handler_); }

  using cancellation_slot_type = boost::asio::cancellation_slot;
  cancellation_slot_type get_cancellation_slot() const noexcept { return bridge_->slot(); }

  template <class... Args>
  void operator()(Args&&... args) {
    boost::asio::get_associated_cancellation_slot(handler_).clear();
    std::move(handler_)(std::forward<Args>(args)...);
  }

 private:
  Handler handler_;
  boost::asio::any_io_executor fallback_;
  std::shared_ptr<cancellation_bridge> bridge_;
};

// Starts `work` on the bridge's strand for `handler`, whose cancellation
// slot must be connected: it is given to the bridge.
template <class T, class Handler>
void spawn_bridged(std::shared_ptr<cancellation_bridge> bridge, boost::asio::awaitable<T> work, Handler handler) {
  boost::asio::get_associated_cancellation_slot(handler).assign(
      [bridge](boost::asio::cancellation_type type) { bridge->request(type); });
  const spawn_strand strand = bridge->strand();
  boost::asio::co_spawn(strand, finishing<T>(std::move(work), bridge),
                 bridged_handler<Handler>(std::move(handler), strand, bridge));
}

template <class T>
struct spawn_signature {
  using type = void(std::exception_ptr, T);
};
template <>
struct spawn_signature<void> {
  using type = void(std::exception_ptr);
};

// A strand to run work on: `ex` itself if it is one, else a new one on it.
template <class Executor>
spawn_strand strand_for(const Executor& ex) {
  if constexpr (std::is_same_v<Executor, spawn_strand>)
    return ex;
  else
    return boost::asio::make_strand(boost::asio::any_io_executor(ex));
}

// co_spawn(ex, work, token), safe to cancel from the caller's side. A
// handler that can be cancelled gets its work run on a strand (`ex` if it
// is a strand<any_io_executor>, else a new strand on `ex`), so that the
// requests reaching it are serialised with it; one that cannot is a plain
// co_spawn on `ex`. Completes with co_spawn's signature.
template <class Executor, class T, class Token>
auto guarded_spawn(const Executor& ex, boost::asio::awaitable<T> work, Token&& token) {
  return boost::asio::async_initiate<Token, typename spawn_signature<T>::type>(
      [](auto handler, const Executor& on, boost::asio::awaitable<T> w) {
        if (!boost::asio::get_associated_cancellation_slot(handler).is_connected()) {
          boost::asio::co_spawn(on, std::move(w), std::move(handler));
          return;
        }
        spawn_bridged<T>(std::make_shared<cancellation_bridge>(strand_for(on)), std::move(w), std::move(handler));
      },
      token, ex, std::move(work));
}

// `work` with throw_if_cancelled set to `throws` first: a spawned coroutine
// otherwise starts with Asio's default (true), whatever its awaiting
// caller chose.
template <class T>
boost::asio::awaitable<T> throwing_if_cancelled(bool throws, boost::asio::awaitable<T> work) {
  co_await boost::asio::this_coro::throw_if_cancelled(throws);
  co_return co_await std::move(work);
}

// Awaits `work` run on `ex` (see guarded_spawn), with the caller's
// throw_if_cancelled: cancelled as if it were awaited here.
template <class Executor, class T>
boost::asio::awaitable<T> run_on(Executor ex, boost::asio::awaitable<T> work) {
  const bool throws = co_await boost::asio::this_coro::throw_if_cancelled();
  // Named before the co_await: GCC 12 destroys temporaries inside one
  // twice. (use_awaitable: Asio 1.81 cannot await a deferred operation that
  // completes with (exception_ptr, T).)
  auto op = guarded_spawn(ex, throwing_if_cancelled(throws, std::move(work)), boost::asio::use_awaitable);
  co_return co_await std::move(op);
}

}  // namespace corokv::detail
