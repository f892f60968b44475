#pragma once
// A follower's connection to the leading master: sends `follow`, applies the
// snapshot and then every journal record to its replica_state, in order, and
// acknowledges each batch once applied (the leader's replies wait for that).
//
// A batch from an older term than `min_term`, a gap in positions, or a frame
// that does not decode ends the link: the caller reconnects (to whoever
// leads then) and starts again from a snapshot.

#include <corokv/meta/replica_state.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/socket_deadline.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

namespace corokv::net {

namespace asio = boost::asio;

struct follower_link_stats {
  std::uint64_t snapshots = 0;  // snapshots loaded
  std::uint64_t records = 0;    // records applied, snapshots included
  std::uint64_t applied = 0;    // the journal position the copy holds
  std::uint64_t term = 0;       // the leader's term
};

class follower_link {
 public:
  explicit follower_link(asio::any_io_executor ex, wire::limits limits = {}) : executor_(ex), limits_(limits) {}

  // Follows the leader at `leader` until the link ends; why it ended.
  // `copy` is only touched from this coroutine (and cleared when a snapshot
  // starts): read it once follow() has returned, or under copy_mutex().
  asio::awaitable<errc> follow(tcp::endpoint leader, std::string name, meta::replica_state& copy,
                               std::uint64_t min_term, duration connect_timeout) {
    auto socket = std::make_shared<tcp::socket>(executor_);
    socket_ = socket;
    {
      socket_deadline deadline(executor_, socket, connect_timeout);
      auto [ec] = co_await socket->async_connect(leader, asio::as_tuple(asio::use_awaitable));
      deadline.disarm();
      if (ec || deadline.fired()) co_return errc::rpc_failed;
    }
    boost::system::error_code ignored;
    socket->set_option(tcp::no_delay(true), ignored);
    std::vector<std::byte> out;
    if (append_frame(wire::message_type::follow, false, 1, wire::follow_request{name}, out, limits_) != errc::success)
      co_return errc::invalid_argument;
    if (auto [ec, n] = co_await asio::async_write(*socket, asio::buffer(out), asio::as_tuple(asio::use_awaitable)); ec)
      co_return errc::rpc_failed;

    wire::frame_header h;
    std::vector<std::byte> payload;
    bool loaded = false;  // a whole snapshot is in the copy
    std::uint64_t applied = 0;
    for (;;) {
      const frame_status got = co_await read_frame(*socket, limits_, /*response=*/true, h, payload);
      if (got != frame_status::ok) co_return got == frame_status::malformed ? errc::protocol_error : errc::rpc_failed;
      if (h.type != wire::message_type::follow) co_return errc::protocol_error;
      if (h.term < min_term) co_return errc::version_mismatch;  // a deposed leader
      wire::replication_batch batch;
      if (wire::decode(payload, batch, limits_) != errc::success) co_return errc::protocol_error;
      if (batch.status != errc::success) co_return batch.status;
      std::uint64_t ack = 0;
      {
        std::lock_guard lock(copy_mu_);
        switch (batch.phase) {
          case wire::replication_phase::snapshot_start:
            copy.clear();
            loaded = false;
            holds_snapshot_ = false;
            [[fallthrough]];
          case wire::replication_phase::snapshot_part:
            for (auto& r : batch.records) copy.apply(r.view());
            break;
          case wire::replication_phase::snapshot_end:
            applied = batch.seq;
            loaded = true;
            holds_snapshot_ = true;
            snapshot_term_ = h.term;
            ack = applied;
            count([&](auto& s) { ++s.snapshots; });
            break;
          case wire::replication_phase::log:
            if (!loaded || batch.seq != applied + 1) co_return errc::protocol_error;
            for (auto& r : batch.records) copy.apply(r.view());
            applied += batch.records.size();
            ack = applied;
            break;
        }
      }
      count([&](auto& s) {
        s.records += batch.records.size();
        s.applied = applied;
        s.term = h.term;
      });
      if (ack == 0 && batch.phase != wire::replication_phase::snapshot_end) continue;
      out.clear();
      append_frame(wire::message_type::replica_ack, false, 0, wire::replica_ack_request{ack}, out, limits_);
      if (auto [ec, n] = co_await asio::async_write(*socket, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
          ec)
        co_return errc::rpc_failed;
    }
  }

  // Ends follow(). Call on the executor.
  void stop() {
    if (auto s = socket_.lock()) {
      boost::system::error_code ignored;
      s->close(ignored);
    }
  }

  std::mutex& copy_mutex() noexcept { return copy_mu_; }

  // Whether the copy holds a whole snapshot (from a leader in
  // snapshot_term()) and every record received after it: false from the
  // start of a snapshot until its end, and after forget_snapshot() (the
  // owner cleared or used the copy).
  bool holds_snapshot() const noexcept { return holds_snapshot_; }
  std::uint64_t snapshot_term() const noexcept { return snapshot_term_; }
  void forget_snapshot() noexcept { holds_snapshot_ = false; }

  follower_link_stats stats() const {
    std::lock_guard lock(stats_mu_);
    return stats_;
  }

 private:
  template <class F>
  void count(F f) {
    std::lock_guard lock(stats_mu_);
    f(stats_);
  }

  asio::any_io_executor executor_;
  wire::limits limits_;
  std::weak_ptr<tcp::socket> socket_;
  std::mutex copy_mu_;
  bool holds_snapshot_ = false;
  std::uint64_t snapshot_term_ = 0;
  mutable std::mutex stats_mu_;
  follower_link_stats stats_;
};

}  // namespace corokv::net
