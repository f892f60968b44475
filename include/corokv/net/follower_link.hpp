#pragma once
// A follower's connection to the leading master: sends `follow`, loads the
// snapshot and then applies every journal record to its replica_state, in
// order, and acknowledges each batch once applied (the leader's replies wait
// for that).
//
// The copy it had stays whole until a new snapshot has arrived in full: the
// snapshot is loaded aside and replaces the copy at its end, so a leader
// that dies while it sends one takes nothing from the follower. The owner
// hears of each snapshot loaded before it is acknowledged (on_snapshot: a
// replicated master publishes in etcd that it now holds a copy), and may
// hold back acknowledgements (may_ack).
//
// A batch from an older term than `min_term`, a gap in positions, or a frame
// that does not decode ends the link: the caller reconnects (to whoever
// leads then) and starts again from a snapshot.

#include <corokv/meta/replica_state.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/one_exchange.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace corokv::net {

struct follower_link_stats {
  std::uint64_t snapshots = 0;  // snapshots loaded
  std::uint64_t records = 0;    // records applied, snapshots included
  std::uint64_t applied = 0;    // the journal position the copy holds
  std::uint64_t term = 0;       // the leader's term
  std::uint64_t connects = 0;   // connections made to a leader
};

class follower_link {
 public:
  // Called with the copy's new position once a snapshot is loaded, before
  // it is acknowledged; false ends the link unacknowledged.
  using snapshot_hook = std::function<boost::asio::awaitable<bool>(meta::copy_position)>;
  // Asked before each acknowledgement; false ends the link unacknowledged.
  using ack_gate = std::function<bool()>;

  explicit follower_link(boost::asio::any_io_executor ex, wire::limits limits = {}) : executor_(ex), limits_(limits) {}

  void on_snapshot(snapshot_hook hook) { on_snapshot_ = std::move(hook); }
  void may_ack(ack_gate gate) { may_ack_ = std::move(gate); }

  // Follows the leader at `leader` until the link ends; why it ended.
  // `copy` is only touched from this coroutine: read it once follow() has
  // returned, or under copy_mutex().
  boost::asio::awaitable<errc> follow(tcp::endpoint leader, std::string name, meta::replica_state& copy,
                               std::uint64_t min_term, duration connect_timeout) {
    auto socket = std::make_shared<tcp::socket>(executor_);
    socket_ = socket;
    if (!co_await connect_within(socket, leader, connect_timeout)) co_return errc::rpc_failed;
    count([](auto& s) { ++s.connects; });
    std::vector<std::byte> out;
    if (append_frame(wire::message_type::follow, false, 1, wire::follow_request{name}, out, limits_) != errc::success)
      co_return errc::invalid_argument;
    if (auto [ec, n] = co_await boost::asio::async_write(*socket, boost::asio::buffer(out), boost::asio::as_tuple(boost::asio::use_awaitable)); ec)
      co_return errc::rpc_failed;

    wire::frame_header h;
    std::vector<std::byte> payload;
    bool loaded = false;   // this link's snapshot is in the copy
    bool loading = false;  // a snapshot is arriving into `incoming`
    meta::replica_state incoming;
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
      switch (batch.phase) {
        case wire::replication_phase::snapshot_start:
          if (loaded) co_return errc::protocol_error;  // one snapshot per link
          incoming.clear();
          loading = true;
          [[fallthrough]];
        case wire::replication_phase::snapshot_part:
          if (!loading) co_return errc::protocol_error;
          for (auto& r : batch.records) incoming.apply(r.view());
          break;
        case wire::replication_phase::snapshot_end: {
          if (!loading) co_return errc::protocol_error;
          for (auto& r : batch.records) incoming.apply(r.view());
          applied = batch.seq;
          loaded = true;
          loading = false;
          std::lock_guard lock(copy_mu_);
          copy = std::move(incoming);
          position_ = {true, h.term, applied};
          ack = applied;
          count([&](auto& s) { ++s.snapshots; });
          break;
        }
        case wire::replication_phase::log: {
          if (!loaded || batch.seq != applied + 1) co_return errc::protocol_error;
          std::lock_guard lock(copy_mu_);
          for (auto& r : batch.records) copy.apply(r.view());
          applied += batch.records.size();
          position_.applied = applied;
          ack = applied;
          break;
        }
      }
      count([&](auto& s) {
        s.records += batch.records.size();
        if (loaded) {
          s.applied = applied;
          s.term = h.term;
        }
      });
      if (ack == 0 && batch.phase != wire::replication_phase::snapshot_end) continue;
      if (batch.phase == wire::replication_phase::snapshot_end && on_snapshot_) {
        auto hook = on_snapshot_;  // named, not a temporary in the co_await: GCC 12 destroys those twice
        const meta::copy_position now = position();
        const bool published = co_await hook(now);
        if (!published) co_return errc::rpc_failed;
      }
      if (may_ack_ && !may_ack_()) co_return errc::rpc_failed;
      out.clear();
      append_frame(wire::message_type::replica_ack, false, 0, wire::replica_ack_request{ack}, out, limits_);
      if (auto [ec, n] = co_await boost::asio::async_write(*socket, boost::asio::buffer(out), boost::asio::as_tuple(boost::asio::use_awaitable));
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

  // How far the copy goes: whole once a snapshot has been loaded, with the
  // term of the leader that sent it and the journal position applied.
  meta::copy_position position() const {
    std::lock_guard lock(copy_mu_);
    return position_;
  }
  // The owner changed the copy itself: cleared it (no copy), or filled it
  // from a service it led (whole, in its own term).
  void set_position(meta::copy_position p) {
    std::lock_guard lock(copy_mu_);
    position_ = p;
  }

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

  boost::asio::any_io_executor executor_;
  wire::limits limits_;
  std::weak_ptr<tcp::socket> socket_;
  snapshot_hook on_snapshot_;
  ack_gate may_ack_;
  mutable std::mutex copy_mu_;
  meta::copy_position position_;
  mutable std::mutex stats_mu_;
  follower_link_stats stats_;
};

}  // namespace corokv::net
