#pragma once
// An asynchronous operation's completion handler, type-erased and kept
// until the operation ends, then posted to the handler's own executor; that
// executor is kept from running out of work meanwhile. For operations
// completed by something outside the handler's executor (a device's
// completion queue, an io_uring), which must never run the handler inline.
//
// (Asio 1.81's any_completion_handler would serve, but moving one from an
// lvalue wraps it in itself without end in that release.)

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <system_error>
#include <utility>

namespace corokv::detail {

class posted_completion {
 public:
  virtual ~posted_completion() = default;
  // Posts the handler with `ec`; call once.
  virtual void post(std::error_code ec) = 0;

  template <class Handler>
  static std::unique_ptr<posted_completion> make(Handler handler, const boost::asio::any_io_executor& fallback);
};

template <class Handler>
class posted_completion_for final : public posted_completion {
 public:
  using executor_type = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
  posted_completion_for(Handler h, const boost::asio::any_io_executor& fallback)
      : handler_(std::move(h)), work_(boost::asio::get_associated_executor(handler_, fallback)) {}
  void post(std::error_code ec) override {
    auto ex = work_.get_executor();
    boost::asio::post(ex, [h = std::move(handler_), ec]() mutable { std::move(h)(ec); });
    work_.reset();
  }

 private:
  Handler handler_;
  boost::asio::executor_work_guard<executor_type> work_;
};

template <class Handler>
std::unique_ptr<posted_completion> posted_completion::make(Handler handler,
                                                           const boost::asio::any_io_executor& fallback) {
  return std::make_unique<posted_completion_for<Handler>>(std::move(handler), fallback);
}

}  // namespace corokv::detail
