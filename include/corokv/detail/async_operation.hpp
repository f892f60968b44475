#pragma once
// Turns a coroutine that computes (std::error_code, T) into an Asio
// asynchronous operation with signature void(boost::system::error_code, T),
// usable with any completion token: deferred, use_awaitable, use_future,
// as_tuple, a plain callback.
//
// As with an Asio I/O object, the work runs on the object's executor (the
// store's), and the handler is invoked through its own associated executor
// (the awaiting coroutine's, a strand it is bound to). Running the work on
// the handler's executor instead would put it, for boost::asio::use_future, on
// Asio's system executor: a pool of threads the library must not start.
// The handler's cancellation slot is connected to the coroutine:
// a cancellation signal reaches whatever the coroutine is awaiting, and the
// coroutine can ask whether one was requested, even before it started.
// The library starts no thread: all of this happens on those executors.

#include <corokv/detail/guarded_spawn.hpp>
#include <corokv/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <memory>
#include <new>
#include <system_error>
#include <utility>

namespace corokv::detail {

template <class T>
using op_result = std::pair<std::error_code, T>;

// An operation's outcome, built so that the value is moved, never copied
// (`{{}, value}` would pick pair's copying constructor).
template <class T>
op_result<T> succeeded(T value) {
  return op_result<T>(std::error_code{}, std::move(value));
}
template <class T>
op_result<T> failed(std::error_code ec) {
  return op_result<T>(ec, T{});
}

// What an operation's coroutine asks to learn whether it was cancelled.
class cancellation_check {
 public:
  cancellation_check() = default;
  explicit cancellation_check(std::shared_ptr<cancellation_bridge> bridge) : bridge_(std::move(bridge)) {}
  bool operator()() const noexcept { return bridge_ && bridge_->requested(); }

 private:
  std::shared_ptr<cancellation_bridge> bridge_;
};

// The error an escaped exception becomes: its own code if it carries one.
inline std::error_code error_from(std::exception_ptr failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const boost::system::system_error& e) {
    return e.code();
  } catch (const std::system_error& e) {
    return e.code();
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  } catch (...) {
    return errc::internal_error;
  }
}

// An std::error_code as the boost one handlers receive. Success needs no
// conversion (converting a category costs a dynamic_cast).
inline boost::system::error_code to_boost(const std::error_code& ec) {
  return ec ? boost::system::error_code(ec) : boost::system::error_code();
}

// The handler co_spawn calls: unpacks the pair and forwards the handler's
// executor, allocator and cancellation slot, so that co_spawn completes
// where the caller asked (a cancellable operation goes through
// spawn_bridged, which puts its bridge in between).
template <class T, class Handler>
class completion_adapter {
 public:
  completion_adapter(Handler handler, boost::asio::any_io_executor fallback)
      : handler_(std::move(handler)), fallback_(std::move(fallback)) {}

  using executor_type = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
  executor_type get_executor() const noexcept { return boost::asio::get_associated_executor(handler_, fallback_); }

  using allocator_type = boost::asio::associated_allocator_t<Handler>;
  allocator_type get_allocator() const noexcept { return boost::asio::get_associated_allocator(handler_); }

  using cancellation_slot_type = boost::asio::associated_cancellation_slot_t<Handler>;
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return boost::asio::get_associated_cancellation_slot(handler_);
  }

  void operator()(std::exception_ptr failure, op_result<T> result) {
    // An exception (out of memory, or thrown by a user-supplied transport or
    // endpoint) still completes the operation, as an error: a caller waiting
    // on it must never hang.
    if (failure) result = {error_from(failure), T{}};
    std::move(handler_)(to_boost(result.first), std::move(result.second));
  }

 private:
  Handler handler_;
  boost::asio::any_io_executor fallback_;
};

// `make(cancellation_check)` creates the coroutine; it is called when the
// operation is initiated, which for boost::asio::deferred is when the deferred
// operation is first awaited or invoked.
// Starts the coroutine make(cancellation_check) for `handler`, on the
// object's executor, completing through the handler's.
template <class T, class Handler, class MakeCoroutine>
void spawn_operation(Handler handler, const boost::asio::any_io_executor& work_ex, MakeCoroutine& make_coroutine) {
  if (!boost::asio::get_associated_cancellation_slot(handler).is_connected()) {
    boost::asio::co_spawn(work_ex, make_coroutine(cancellation_check()), completion_adapter<T, Handler>(std::move(handler), work_ex));
    return;
  }
  // Cancellable: the coroutine runs on a strand of its own, behind a
  // cancellation bridge (detail/guarded_spawn.hpp), which dispatches each
  // request onto that strand, so that a request never runs beside the
  // coroutine on another thread of a pool, and never reaches co_spawn's
  // own cancellation handler from outside that strand.
  auto bridge = std::make_shared<cancellation_bridge>(boost::asio::make_strand(work_ex));
  auto coroutine = make_coroutine(cancellation_check(bridge));
  spawn_bridged<op_result<T>>(std::move(bridge), std::move(coroutine),
                              completion_adapter<T, Handler>(std::move(handler), work_ex));
}

template <class T, class Token, class MakeCoroutine>
auto launch(const boost::asio::any_io_executor& executor, Token&& token, MakeCoroutine make) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code, T)>(
      [](auto handler, const boost::asio::any_io_executor& work_ex, MakeCoroutine make_coroutine) {
        spawn_operation<T>(std::move(handler), work_ex, make_coroutine);
      },
      token, executor, std::move(make));
}

// As launch, for an operation that can often finish without waiting (an
// embedded store's read of leased keys). attempt() does what it can at
// once and returns {result, state}: with a result, the operation is over
// and its handler is posted with it, through the handler's associated
// executor, never invoked from within the initiating function (as Asio's
// own operations complete when their work was done at once). Without one,
// carry_on(cancellation_check, state) makes the coroutine that does the
// rest, as launch would. A handler with a connected cancellation slot skips
// the attempt (carry_on gets a default-constructed state: nothing done): a
// cancellable operation always starts on its own strand.
template <class T, class Token, class Attempt, class CarryOn>
auto launch_attempt(const boost::asio::any_io_executor& executor, Token&& token, Attempt attempt, CarryOn carry_on) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code, T)>(
      [](auto handler, const boost::asio::any_io_executor& work_ex, Attempt try_now, CarryOn rest) {
        using state_type = decltype(try_now().second);
        if (boost::asio::get_associated_cancellation_slot(handler).is_connected()) {
          auto from_scratch = [&](cancellation_check check) { return rest(check, state_type{}); };
          spawn_operation<T>(std::move(handler), work_ex, from_scratch);
          return;
        }
        auto attempted = try_now();
        if (auto& done = attempted.first) {
          auto ex = boost::asio::get_associated_executor(handler, work_ex);
          boost::asio::post(ex, boost::asio::append(std::move(handler), to_boost(done->first), std::move(done->second)));
          return;
        }
        auto carry_on_from_state = [&](cancellation_check check) { return rest(check, std::move(attempted.second)); };
        spawn_operation<T>(std::move(handler), work_ex, carry_on_from_state);
      },
      token, executor, std::move(attempt), std::move(carry_on));
}

}  // namespace corokv::detail
