#pragma once
// Serves a meta::service over TCP with the wire protocol. One coroutine per
// connection reads a frame (header first, checked before the payload is
// read), decodes it, calls the service and writes the response with the
// request's id. A client may pipeline: it can send many requests without
// waiting; each connection answers them in order. A malformed frame, or a
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

namespace asio = boost::asio;

struct master_options {
  wire::limits limits;
  duration maintenance_interval = std::chrono::milliseconds(100);
};

struct master_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t protocol_errors = 0;  // connections closed for a malformed frame
  std::uint64_t requests = 0;
  std::uint64_t refused = 0;  // connections closed unanswered: not the leader, fenced, or a newer term seen
  std::uint64_t accept_errors = 0;  // failed accepts (out of descriptors, ...), each followed by a growing wait
};

class master_server {
 public:
  master_server(asio::any_io_executor ex, std::shared_ptr<meta::service> service, const tcp::endpoint& listen,
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
    asio::co_spawn(executor_, accept_loop(), asio::detached);
    asio::co_spawn(executor_, maintenance_loop(), asio::detached);
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
  asio::awaitable<void> accept_loop() {
    while (!stopped_) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (stopped_ || ec == asio::error::operation_aborted) break;
        // A failed accept (e.g. out of descriptors) affects only that client;
        // the next one waits, so that a lasting failure does not spin.
        ++stats_.accept_errors;
        accept_pause_.expires_after(accept_retry_.next());
        co_await accept_pause_.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      accept_retry_.reset();
      socket.set_option(tcp::no_delay(true), ec);
      ++stats_.connections_accepted;
      auto shared = std::make_shared<tcp::socket>(std::move(socket));
      connections_.push_back(shared);
      asio::co_spawn(executor_, serve(shared, std::prev(connections_.end())), asio::detached);
    }
  }

  asio::awaitable<void> maintenance_loop() {
    while (!stopped_) {
      timer_.expires_after(options_.maintenance_interval);
      auto [ec] = co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec || stopped_) break;
      service_->maintain();
    }
  }

  asio::awaitable<void> serve(std::shared_ptr<tcp::socket> socket, std::list<std::shared_ptr<tcp::socket>>::iterator self) {
    ++stats_.connections_open;
    std::vector<std::byte> payload, out;
    for (;;) {
      wire::frame_header h;
      const frame_status got = co_await read_frame(*socket, options_.limits, /*response=*/false, h, payload);
      if (got == frame_status::ended || got == frame_status::closed) break;  // the peer left, or the server stopped
      wire::request request;
      std::span<const std::byte> trailing;
      if (got == frame_status::malformed ||
          wire::decode_request(h.type, payload, request, trailing, options_.limits) != errc::success) {
        ++stats_.protocol_errors;
        break;
      }
      ++stats_.requests;
      master_role* role = role_;
      if (role && h.term > role->term()) role->newer_term_seen(h.term);
      if (role && !role->may_answer()) {
        ++stats_.refused;
        break;
      }
      if (h.type == wire::message_type::follow) {
        if (!role) {
          ++stats_.protocol_errors;  // a follower of a lone master: nothing to follow
          break;
        }
        co_await role->serve_follower(socket, h.request_id, std::get<wire::follow_request>(request).name);
        break;
      }
      if (h.type == wire::message_type::replica_ack) {  // only on a follow connection
        ++stats_.protocol_errors;
        break;
      }
      out.assign(wire::header_size, std::byte{0});
      if (respond(h.type, request, out) != errc::success || out.size() - wire::header_size > options_.limits.max_payload) {
        // A response we cannot encode (over the limits): report it to this
        // client as a failed call, in the shape it expects.
        out.resize(wire::header_size);
        encode_failure(h.type, errc::invalid_argument, out);
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
      }
      const auto header = wire::encode_header({h.type, true, h.request_id,
                                               static_cast<std::uint32_t>(out.size() - wire::header_size),
                                               role ? role->term() : 0});
      std::copy(header.begin(), header.end(), out.begin());
      auto [write_ec, w] = co_await asio::async_write(*socket, asio::buffer(out), transfer_all_at_once{}, asio::as_tuple(asio::use_awaitable));
      if (write_ec) break;
    }
    boost::system::error_code ignored;
    socket->close(ignored);
    connections_.erase(self);
    --stats_.connections_open;
  }

  // Calls the service for one decoded request and appends the encoded
  // response to `out`.
  errc respond(wire::message_type type, const wire::request& request, std::vector<std::byte>& out) {
    using wire::message_type;
    meta::service& svc = *service_;
    auto status_only = [&](errc e) { return wire::encode(wire::status_response{e}, out); };
    auto statuses = [&](std::size_t n, auto call) {
      wire::statuses_response r;
      r.results.resize(n);
      r.status = call(std::span<errc>(r.results));
      if (r.status != errc::success) r.results.clear();
      return wire::encode(r, out);
    };
    switch (type) {
      case message_type::register_node:
        return status_only(svc.register_node(std::get<wire::node_request>(request).node));
      case message_type::heartbeat: return status_only(svc.heartbeat(std::get<wire::node_request>(request).node));
      case message_type::unregister_node:
        return status_only(svc.unregister_node(std::get<wire::node_request>(request).node));
      case message_type::mount_segment: {
        const auto& m = std::get<wire::mount_request>(request);
        const auto r = svc.mount_segment(m.node, m.size, m.endpoints, m.requested, m.remount, m.tier);
        return wire::encode(wire::mount_response{r.status, r.id}, out);
      }
      case message_type::unmount_segment:
        return status_only(svc.unmount_segment(std::get<wire::unmount_request>(request).segment));
      case message_type::list_segments: return wire::encode(wire::segments_response{errc::success, svc.segments()}, out);
      case message_type::put_start: {
        const auto& m = std::get<wire::put_start_request>(request);
        wire::put_start_response r;
        r.results.resize(m.keys.size());
        r.status = svc.put_start(m.keys, m.sizes, put_options{m.replicas}, m.writer, r.results);
        if (r.status != errc::success) r.results.clear();
        return wire::encode(r, out);
      }
      case message_type::put_end:
      case message_type::put_revoke: {
        const auto& m = std::get<wire::versioned_keys_request>(request);
        return statuses(m.keys.size(), [&](std::span<errc> results) {
          if (type == message_type::put_end) return svc.put_end(m.keys, m.versions, results);
          return svc.put_revoke(m.keys, m.versions, results);
        });
      }
      case message_type::validate: {
        const auto& m = std::get<wire::validate_request>(request);
        return statuses(m.keys.size(),
                        [&](std::span<errc> results) { return svc.validate(m.keys, m.versions, m.read_from, results); });
      }
      case message_type::query: {
        const auto& m = std::get<wire::query_request>(request);
        wire::query_response r;
        r.results.resize(m.keys.size());
        r.status = svc.query(m.keys, duration(m.ttl_ns), r.results);
        if (r.status != errc::success) r.results.clear();
        return wire::encode(r, out);
      }
      case message_type::exist:
      case message_type::remove: {
        const auto& m = std::get<wire::keys_request>(request);
        return statuses(m.keys.size(), [&](std::span<errc> results) {
          return type == message_type::exist ? svc.exist(m.keys, results) : svc.remove(m.keys, results);
        });
      }
      case message_type::exist_prefix:
        return wire::encode(
            wire::prefix_response{errc::success, svc.exist_prefix(std::get<wire::keys_request>(request).keys)}, out);
      case message_type::remove_all:
        return wire::encode(wire::count_response{errc::success, svc.remove_all()}, out);
      case message_type::demote_start: {
        const auto& m = std::get<wire::demote_start_request>(request);
        wire::demotions_response r;
        r.status = svc.demote_start(m.node, m.max_objects, m.max_bytes, m.saved_through, m.offered, r.work);
        return wire::encode(r, out);
      }
      case message_type::adopt_disk_copies: {
        const auto& m = std::get<wire::adopt_request>(request);
        return statuses(m.copies.size(),
                        [&](std::span<errc> results) { return svc.adopt_disk_copies(m.node, m.copies, results); });
      }
      case message_type::demote_end: {
        const auto& m = std::get<wire::demote_end_request>(request);
        return statuses(m.keys.size(),
                        [&](std::span<errc> results) { return svc.demote_end(m.keys, m.versions, m.copied, results); });
      }
      case message_type::data_read:
      case message_type::data_write:
      case message_type::rdma_connect:
      case message_type::follow:
      case message_type::replica_ack:
        // Well-formed, but for a data server: refused as a call, the
        // connection stays open.
        return encode_failure(type, errc::invalid_argument, out);
    }
    return encode_failure(type, errc::invalid_argument, out);
  }

  // The response a request of `type` expects, failed as a whole with `e`.
  static errc encode_failure(wire::message_type type, errc e, std::vector<std::byte>& out) {
    wire::response r = wire::empty_response(type);
    return std::visit(
        [&](auto& m) {
          m.status = e;
          return wire::encode(m, out);
        },
        r);
  }

  asio::any_io_executor executor_;
  std::shared_ptr<meta::service> service_;
  master_options options_;
  tcp::acceptor acceptor_;
  asio::steady_timer timer_;
  asio::steady_timer accept_pause_;
  corokv::detail::backoff accept_retry_{{std::chrono::milliseconds(5), std::chrono::milliseconds(500), 0.5}};
  std::list<std::shared_ptr<tcp::socket>> connections_;
  master_stats stats_;
  master_role* role_ = nullptr;
  bool stopped_ = false;
};

}  // namespace corokv::net
