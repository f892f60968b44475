#pragma once
// Bounds an exchange on a socket in time: if the exchange is still running
// when the deadline passes, the socket is closed, so whatever the exchange
// awaits fails at once instead of hanging.
//
// The timer's handler may already be queued when the exchange ends, so it
// holds the socket (never a reference to it) and does nothing once the
// deadline is disarmed. Construct it with the executor the exchange runs on
// (a strand, or a one-thread io_context): handler and exchange are then
// never run at the same time, and the plain flags need no lock.

#include <corokv/types.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>

namespace corokv::net {

class socket_deadline {
 public:
  template <class Executor>
  socket_deadline(const Executor& ex, std::shared_ptr<boost::asio::ip::tcp::socket> socket, duration timeout)
      : timer_(ex, timeout) {
    timer_.async_wait([state = state_, socket = std::move(socket)](boost::system::error_code ec) {
      if (ec || state->disarmed) return;
      state->fired = true;
      boost::system::error_code ignored;
      socket->close(ignored);
    });
  }
  socket_deadline(const socket_deadline&) = delete;
  socket_deadline& operator=(const socket_deadline&) = delete;
  ~socket_deadline() { disarm(); }

  // The exchange is over: the socket is left alone from now on.
  void disarm() {
    state_->disarmed = true;
    timer_.cancel();
  }
  // Whether the deadline passed and closed the socket.
  bool fired() const noexcept { return state_->fired; }

 private:
  struct flags {
    bool fired = false;
    bool disarmed = false;
  };
  std::shared_ptr<flags> state_ = std::make_shared<flags>();
  boost::asio::steady_timer timer_;
};

}  // namespace corokv::net
