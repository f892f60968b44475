#pragma once
// Serves a meta::service over TCP with the wire protocol. One coroutine per
// connection reads a frame (header first, checked before the payload is
// read), hands it to dispatch_request (master_dispatch.hpp: decoding,
// refusals, serving the operation) and writes the response it makes. A
// client may pipeline: it can send many requests without waiting; each
// connection answers them in order. A malformed frame, or a
// response frame sent to the server, is a protocol error: that connection is
// closed and counted, and every other connection goes on.
//
// Everything runs on the executor given at construction (use a strand or a
// one-thread io_context per server: the server's own state is not locked; the
// service is thread-safe by itself). A timer on that executor runs the
// service's maintain() every maintenance_interval while the server runs.
//
// One of several replicated masters has a master_role (set_role): then a
// request is answered only while the role allows (a follower, or a fenced
// leader, closes the connection unanswered), no reply goes out before the
// followers have applied every change made so far (the call's own, and any
// other a read may reflect: an object whose commit is not yet replicated
// must not be leased out), every reply carries the role's term, and
// `follow` hands the connection to the role's replication.

#include <corokv/detail/backoff.hpp>
#include <corokv/meta/service.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/master_dispatch.hpp>
#include <corokv/net/master_role.hpp>
#include <corokv/wire/frame.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <variant>
#include <vector>

namespace corokv::net {

struct master_options {
  wire::limits limits;
  duration maintenance_interval = std::chrono::milliseconds(100);
};

class master_server {
 public:
  master_server(boost::asio::any_io_executor ex, std::shared_ptr<meta::service> service, const tcp::endpoint& listen,
                master_options options = {})
      : executor_(ex),
        service_(std::move(service)),
        options_(options),
        acceptor_(ex, listen),
        timer_(ex),
        accept_pause_(ex) {}

  master_server(const master_server&) = delete;
  master_server& operator=(const master_server&) = delete;

  tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  const master_stats& stats() const noexcept { return stats_; }
  meta::service& service() noexcept { return *service_; }
  const meta::service& service() const noexcept { return *service_; }

  // Makes this master one of several replicated ones (see the top of the
  // file); nullptr makes it a lone master again. Call on the executor; the
  // role must outlive the server's use of it.
  void set_role(master_role* role) noexcept { role_ = role; }

  // Serves another service from now on (a master that takes over the lead
  // serves the state it copied). Call on the executor.
  void set_service(std::shared_ptr<meta::service> service) { service_ = std::move(service); }

  // Closes every client connection (not the listener): after losing the
  // lead, so that clients go and find the new leader at once.
  void drop_connections() {
    boost::system::error_code ignored;
    for (auto& socket : connections_) socket->close(ignored);
  }

  // Starts accepting and the maintenance timer. Call on the executor.
  void start() {
    boost::asio::co_spawn(executor_, accept_loop(), boost::asio::detached);
    boost::asio::co_spawn(executor_, maintenance_loop(), boost::asio::detached);
  }

  // Stops accepting, closes every connection and the timer; the coroutines
  // end on their own once their pending operations are cancelled. Call on
  // the executor.
  void stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    timer_.cancel();
    accept_pause_.cancel();
    for (auto& socket : connections_) socket->close(ignored);
  }

 private:
  boost::asio::awaitable<void> accept_loop() {
    while (!stopped_) {
      auto [ec, socket] = co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) {
        if (stopped_ || ec == boost::asio::error::operation_aborted) break;
        // A failed accept (e.g. out of descriptors) affects only that client;
        // the next one waits, so that a lasting failure does not spin.
        ++stats_.accept_errors;
        accept_pause_.expires_after(accept_retry_.next());
        co_await accept_pause_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        continue;
      }
      accept_retry_.reset();
      socket.set_option(tcp::no_delay(true), ec);
      ++stats_.connections_accepted;
      auto shared = std::make_shared<tcp::socket>(std::move(socket));
      connections_.push_back(shared);
      boost::asio::co_spawn(executor_, serve(shared, std::prev(connections_.end())), boost::asio::detached);
    }
  }

  boost::asio::awaitable<void> maintenance_loop() {
    while (!stopped_) {
      timer_.expires_after(options_.maintenance_interval);
      auto [ec] = co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec || stopped_) break;
      service_->maintain();
    }
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<tcp::socket> socket, std::list<std::shared_ptr<tcp::socket>>::iterator self) {
    ++stats_.connections_open;
    std::vector<std::byte> payload, out;
    for (;;) {
      wire::frame_header h;
      const frame_status got = co_await read_frame(*socket, options_.limits, /*response=*/false, h, payload);
      if (got == frame_status::ended || got == frame_status::closed) break;  // the peer left, or the server stopped
      if (got == frame_status::malformed) {
        ++stats_.protocol_errors;
        break;
      }
      master_role* role = role_;
      const dispatch_result d = dispatch_request(*service_, role, options_.limits, h, payload, out, stats_);
      if (d.verdict == dispatch_verdict::close) break;
      if (d.verdict == dispatch_verdict::follow) {
        co_await role->serve_follower(socket, h.request_id, d.follower);
        break;
      }
      if (role) {
        // Everything the reply may reflect is replicated first (at once when
        // nothing is pending), and it goes out only if that happened in time
        // and we still lead; otherwise the connection closes unanswered.
        const bool held = co_await role->replicated(role->position());
        if (!held || role_ != role || !role->may_answer()) {
          ++stats_.refused;
          break;
        }
        wire::stamp_term(out, role->term());
      }
      auto [write_ec, w] = co_await boost::asio::async_write(*socket, boost::asio::buffer(out), transfer_all_at_once{}, boost::asio::as_tuple(boost::asio::use_awaitable));
      if (write_ec) break;
    }
    boost::system::error_code ignored;
    socket->close(ignored);
    connections_.erase(self);
    --stats_.connections_open;
  }

  boost::asio::any_io_executor executor_;
  std::shared_ptr<meta::service> service_;
  master_options options_;
  tcp::acceptor acceptor_;
  boost::asio::steady_timer timer_;
  boost::asio::steady_timer accept_pause_;
  corokv::detail::backoff accept_retry_{{std::chrono::milliseconds(5), std::chrono::milliseconds(500), 0.5}};
  std::list<std::shared_ptr<tcp::socket>> connections_;
  master_stats stats_;
  master_role* role_ = nullptr;
  bool stopped_ = false;
};

}  // namespace corokv::net
