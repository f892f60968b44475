#pragma once
// The metadata connection's lifecycle without I/O: when the remote endpoint
// (remote_metadata.hpp) connects, waits, rejoins, serves its calls, sends
// heartbeats and drops its connection. It is fed what happened (connected,
// a reply from some term, lost, the clock, a new leader) and answers with
// what to do next (connect, back off for so long, rejoin, send, heartbeat,
// drop). No sockets and no clock of its own: time is passed in. Which call
// goes out or completes is the call_table's; what a rejoin redoes is the
// rejoin_list's.
//
//   connecting --connected--> joining --rejoined--> ready
//       |  ^                     |                    |
//   failed |wait_over           lost, stale reply, a newer leader, stop
//       v  |                     v                    v
//   backing_off <--after_drop-- dropped <-------------+
//                 (at once to connecting when the drop moved to a new leader)
//
// - Backoff: each failed attempt waits longer (detail/backoff.hpp); a
//   connection counts as a success only once the master answered on it, so
//   one that a follower or a fenced master closes unanswered grows the wait
//   too. A new leader named while waiting ends the wait, from the shortest.
// - Terms: every reply carries its master's term. One older than the
//   newest seen comes from a deposed leader: refused, and its connection
//   dropped. A newer one is adopted. A located master leading in an older
//   term is not connected to. A leader named in a term newer than the
//   connected master's moves the connection to it at once.
// - Heartbeats: once ready, one round per heartbeat_interval, from start.
//   A heartbeat answered node_unknown (the master declared the node dead)
//   asks for that node's rejoin.

#include <corokv/detail/backoff.hpp>
#include <corokv/error.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <cstdint>

namespace corokv::net {

struct connection_lifecycle_options {
  duration heartbeat_interval = std::chrono::seconds(1);
  corokv::detail::backoff_options reconnect;  // between connection attempts
  corokv::detail::backoff_options leader_retry = reconnect;  // between attempts to ask for the leader
};

class connection_lifecycle {
 public:
  enum class state {
    connecting,   // a connection attempt is under way
    backing_off,  // waiting before the next attempt
    joining,      // connected; the endpoint's nodes register again before other traffic
    ready,        // every call may go out
    dropped,      // the connection ended; the endpoint has not yet taken up the next step
    stopped,
  };
  enum class act {
    none,
    connect,    // start a connection attempt (or, while backing off, end the wait now)
    back_off,   // wait `wait`, then wait_over()
    rejoin,     // register the nodes again (all of them after connected(); one after a heartbeat)
    send,       // the connection is ready: send what is queued
    heartbeat,  // a heartbeat for each registered node
    drop,       // close the connection: what was sent on it fails
  };
  // Why a connection is dropped.
  enum class cause { none, lost, stale_term, new_leader, stopped };

  struct action {
    act what = act::none;
    duration wait{};         // back_off
    cause why = cause::none; // drop
    friend bool operator==(const action&, const action&) = default;
  };

  // `seed`: the jitter's; callers in many processes pass something that
  // differs between them, so that clients that lost one master do not come
  // back in step.
  explicit connection_lifecycle(connection_lifecycle_options options, std::uint64_t seed = 0)
      : options_(options), reconnect_(options.reconnect, seed), leader_retry_(options.leader_retry, seed + 1) {}

  // The endpoint starts at `now`: connect.
  action start(time_point now) {
    next_heartbeat_ = now + options_.heartbeat_interval;
    state_ = state::connecting;
    return {act::connect};
  }

  // ------------------------------------------------------------ connecting
  // A replicated master was located, leading in `term`: whether to connect
  // to it. One from an older term than seen is a deposed leader.
  bool located(std::uint64_t term) {
    if (term < newest_term_) return false;
    note_term(term);
    connected_term_ = term;
    return true;
  }
  // The attempt failed (refused, timed out, no leader known).
  action connect_failed() {
    if (state_ != state::connecting) return {};
    return wait(reconnect_.next());
  }
  // The wait is over (elapsed, or ended early by a new leader).
  action wait_over() {
    if (state_ != state::backing_off) return {};
    state_ = state::connecting;
    return {act::connect};
  }
  // The attempt connected: before any other call, the nodes rejoin.
  action connected() {
    if (state_ != state::connecting) return {};
    state_ = state::joining;
    answered_ = false;
    return {act::rejoin};
  }
  // The rejoin is over (whatever each call's outcome): everything may go out.
  action rejoined() {
    if (state_ != state::joining) return {};
    state_ = state::ready;
    return {act::send};
  }

  // ------------------------------------------------------------ connected
  // A reply came from a master leading in `term`: accepted (none), or
  // refused and the connection dropped.
  action reply(std::uint64_t term) {
    if (!connected_now()) return {};
    if (term < newest_term_) {
      ++stale_replies_;
      return drop(cause::stale_term);
    }
    note_term(term);
    return {};
  }
  // An accepted reply matched a call: the master answers on this
  // connection, so it counts as a success for the backoff.
  void answered() noexcept {
    if (connected_now()) answered_ = true;
  }
  // The connection broke (read or write failed, the master closed it, a
  // reply broke the stream).
  action lost() {
    if (!connected_now()) return {};
    return drop(cause::lost);
  }
  // The endpoint took up the dropped connection's aftermath: reconnect at
  // once to a new leader, otherwise after a wait; from the shortest wait if
  // the master had answered on it.
  action after_drop() {
    if (state_ != state::dropped) return {};
    if (answered_) reconnect_.reset();
    answered_ = false;
    if (moving_to_leader_) {
      moving_to_leader_ = false;
      state_ = state::connecting;
      return {act::connect};
    }
    return wait(reconnect_.next());
  }

  // ------------------------------------------------------------ the clock
  // The clock ticked: heartbeats when they are due and the connection is
  // ready. (Calls' timeouts are the call_table's.)
  action tick(time_point now) {
    if (state_ != state::ready || now < next_heartbeat_) return {};
    next_heartbeat_ = now + options_.heartbeat_interval;
    return {act::heartbeat};
  }
  // A heartbeat's answer: node_unknown asks for that node's rejoin.
  action heartbeat_answered(errc status) const {
    if (state_ == state::stopped || status != errc::node_unknown) return {};
    return {act::rejoin};
  }

  // ------------------------------------------------------------ leaders
  // The term a watch for the next leader waits beyond.
  std::uint64_t watch_beyond() const noexcept { return std::max(newest_term_, connected_term_); }
  // A leader was named in `term`. Connected to an older term's master: drop
  // the connection and reconnect at once. Waiting to reconnect: end the
  // wait (connect), from the shortest wait again.
  action leader_changed(std::uint64_t term) {
    leader_retry_.reset();
    note_term(term);
    if (state_ == state::stopped) return {};
    if (connected_now()) {
      if (term <= connected_term_) return {};
      ++leader_changes_;
      moving_to_leader_ = true;
      return drop(cause::new_leader);
    }
    reconnect_.reset();
    return state_ == state::backing_off ? action{act::connect} : action{};
  }
  // The watch ended without a new leader: it may be asked again at once.
  void leader_unchanged() noexcept { leader_retry_.reset(); }
  // The watch failed (etcd unreachable): ask again after this wait.
  action leader_watch_failed() {
    const duration d = leader_retry_.next();
    ++backoffs_;
    backoff_total_ += d;
    return {act::back_off, d};
  }

  // ------------------------------------------------------------ the end
  // Stop: drop the connection if one is up; no further action.
  action stop() {
    const bool was_connected = connected_now();
    state_ = state::stopped;
    return was_connected ? action{act::drop, {}, cause::stopped} : action{};
  }

  state current() const noexcept { return state_; }
  bool ready() const noexcept { return state_ == state::ready; }
  bool stopped() const noexcept { return state_ == state::stopped; }
  // The newest leadership term seen: requests carry it, so that a deposed
  // master learns it.
  std::uint64_t newest_term() const noexcept { return newest_term_; }
  std::uint64_t connected_term() const noexcept { return connected_term_; }
  // Counts, for the endpoint's stats.
  std::uint64_t stale_replies() const noexcept { return stale_replies_; }
  std::uint64_t leader_changes() const noexcept { return leader_changes_; }
  std::uint64_t backoffs() const noexcept { return backoffs_; }  // reconnect waits and leader-watch waits
  duration backoff_total() const noexcept { return backoff_total_; }
  duration backoff_ceiling() const noexcept { return reconnect_.ceiling(); }  // the longest the next reconnect wait may be

 private:
  bool connected_now() const noexcept { return state_ == state::joining || state_ == state::ready; }

  action drop(cause why) {
    state_ = state::dropped;
    return {act::drop, {}, why};
  }
  action wait(duration d) {
    state_ = state::backing_off;
    ++backoffs_;
    backoff_total_ += d;
    return {act::back_off, d};
  }
  void note_term(std::uint64_t term) noexcept { newest_term_ = std::max(newest_term_, term); }

  connection_lifecycle_options options_;
  state state_ = state::connecting;
  corokv::detail::backoff reconnect_;
  corokv::detail::backoff leader_retry_;
  time_point next_heartbeat_{};
  std::uint64_t newest_term_ = 0;
  std::uint64_t connected_term_ = 0;  // the term of the located master connected to (0: a fixed master)
  bool answered_ = false;             // the master answered on the current connection
  bool moving_to_leader_ = false;     // the connection was dropped to move to a new leader
  std::uint64_t stale_replies_ = 0;
  std::uint64_t leader_changes_ = 0;
  std::uint64_t backoffs_ = 0;
  duration backoff_total_{};
};

}  // namespace corokv::net
