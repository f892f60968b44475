// The metadata connection's lifecycle without sockets: every transition,
// term fencing, the backoff's growth and reset, heartbeat cadence, rejoin
// after a reconnect and after node_unknown, a new leader mid-call, and a
// lost connection in every state.

#include <corokv/net/connection_lifecycle.hpp>

#include <doctest/doctest.h>

#include <vector>

using namespace corokv;
using namespace std::chrono_literals;

namespace {

using lifecycle = net::connection_lifecycle;
using act = lifecycle::act;
using state = lifecycle::state;
using cause = lifecycle::cause;

// Waits without jitter: 10, 20, 40, 80, 80... ms, so each is known.
net::connection_lifecycle_options exact_options() {
  net::connection_lifecycle_options o;
  o.heartbeat_interval = 100ms;
  o.reconnect = {10ms, 80ms, 0.0};
  o.leader_retry = {5ms, 40ms, 0.0};
  return o;
}

const time_point started = time_point{} + 1h;

lifecycle::action back_off(duration d) { return {act::back_off, d}; }
lifecycle::action dropped(cause why) { return {act::drop, {}, why}; }
const lifecycle::action nothing{};
const lifecycle::action connect{act::connect};
const lifecycle::action rejoin{act::rejoin};
const lifecycle::action send{act::send};
const lifecycle::action heartbeat{act::heartbeat};

// A lifecycle brought to `target` along the usual path.
lifecycle in_state(state target) {
  lifecycle l(exact_options());
  REQUIRE(l.start(started) == connect);
  if (target == state::connecting) return l;
  if (target == state::backing_off) {
    REQUIRE(l.connect_failed() == back_off(10ms));
    return l;
  }
  REQUIRE(l.connected() == rejoin);
  if (target == state::joining) return l;
  if (target == state::dropped) {
    REQUIRE(l.lost() == dropped(cause::lost));
    return l;
  }
  REQUIRE(l.rejoined() == send);
  if (target == state::ready) return l;
  REQUIRE(target == state::stopped);
  REQUIRE(l.stop() == dropped(cause::stopped));
  return l;
}

}  // namespace

TEST_CASE("connection lifecycle: connect, rejoin before any other traffic, then send, and a failed attempt backs off") {
  lifecycle l(exact_options());
  CHECK(l.start(started) == connect);
  CHECK(l.current() == state::connecting);
  CHECK(l.connect_failed() == back_off(10ms));
  CHECK(l.current() == state::backing_off);
  CHECK(l.wait_over() == connect);
  CHECK(l.current() == state::connecting);
  CHECK(l.connected() == rejoin);
  CHECK(l.current() == state::joining);
  CHECK_FALSE(l.ready());
  CHECK(l.rejoined() == send);
  CHECK(l.ready());
  CHECK(l.lost() == dropped(cause::lost));
  CHECK(l.current() == state::dropped);
  CHECK_FALSE(l.ready());
  CHECK(l.after_drop() == back_off(20ms));  // the master never answered on it: a failure like any other
  CHECK(l.wait_over() == connect);
  CHECK(l.connected() == rejoin);  // every new connection rejoins first
  CHECK(l.backoffs() == 2);
  CHECK(l.backoff_total() == 30ms);
}

TEST_CASE("connection lifecycle: events out of their state change nothing") {
  lifecycle l = in_state(state::connecting);
  CHECK(l.wait_over() == nothing);
  CHECK(l.rejoined() == nothing);
  CHECK(l.after_drop() == nothing);
  CHECK(l.reply(5) == nothing);
  CHECK(l.newest_term() == 0);  // a reply with no connection up is nobody's
  CHECK(l.current() == state::connecting);

  lifecycle b = in_state(state::backing_off);
  CHECK(b.connect_failed() == nothing);
  CHECK(b.connected() == nothing);
  CHECK(b.current() == state::backing_off);

  lifecycle r = in_state(state::ready);
  CHECK(r.connected() == nothing);
  CHECK(r.connect_failed() == nothing);
  CHECK(r.rejoined() == nothing);
  CHECK(r.current() == state::ready);
}

TEST_CASE("connection lifecycle: waits grow while attempts fail, up to the max, and a connection answered on resets them") {
  lifecycle l(exact_options());
  l.start(started);
  std::vector<duration> waits;
  for (int i = 0; i < 5; ++i) {
    const auto a = l.connect_failed();
    REQUIRE(a.what == act::back_off);
    waits.push_back(a.wait);
    CHECK(l.backoff_ceiling() == std::min<duration>(20ms * (1 << i), 80ms));
    l.wait_over();
  }
  CHECK(waits == std::vector<duration>{10ms, 20ms, 40ms, 80ms, 80ms});

  // Connected, but closed unanswered (a follower, a fenced master): still growing.
  l.connected();
  l.rejoined();
  l.lost();
  CHECK(l.after_drop() == back_off(80ms));
  l.wait_over();
  // Answered on: the next failure waits the shortest time again.
  l.connected();
  CHECK(l.reply(0) == nothing);
  l.answered();
  l.rejoined();
  l.lost();
  CHECK(l.after_drop() == back_off(10ms));
  l.wait_over();
  // The reset was that connection's: a new one unanswered grows again.
  l.connected();
  l.lost();
  CHECK(l.after_drop() == back_off(20ms));
  CHECK(l.backoffs() == 8);
}

TEST_CASE("connection lifecycle: an answer during the rejoin counts, one on a dropped connection does not") {
  lifecycle l = in_state(state::joining);
  l.answered();  // the register's reply
  l.lost();
  CHECK(l.after_drop() == back_off(10ms));
  l.wait_over();
  CHECK(l.connect_failed() == back_off(20ms));
  l.wait_over();
  l.connected();
  l.lost();
  l.answered();  // late: the connection is gone
  CHECK(l.after_drop() == back_off(40ms));
}

TEST_CASE("connection lifecycle: a reply from an older term is refused and drops the connection, and a newer term is adopted") {
  lifecycle l = in_state(state::ready);
  CHECK(l.reply(3) == nothing);
  CHECK(l.newest_term() == 3);
  CHECK(l.reply(3) == nothing);  // the same term: accepted
  CHECK(l.reply(5) == nothing);  // a newer term: adopted, and requests carry it from now on
  CHECK(l.newest_term() == 5);
  CHECK(l.stale_replies() == 0);
  CHECK(l.reply(4) == dropped(cause::stale_term));  // a deposed master
  CHECK(l.stale_replies() == 1);
  CHECK(l.newest_term() == 5);
  CHECK(l.current() == state::dropped);
  CHECK(l.reply(9) == nothing);  // nothing more from that connection counts
  CHECK(l.newest_term() == 5);
  CHECK(l.after_drop() == back_off(10ms));

  // During the rejoin too.
  lifecycle j = in_state(state::joining);
  CHECK(j.reply(2) == nothing);
  j.lost();
  j.after_drop();
  j.wait_over();
  j.connected();
  CHECK(j.reply(1) == dropped(cause::stale_term));
}

TEST_CASE("connection lifecycle: a located master from an older term than seen is not connected to") {
  lifecycle l(exact_options());
  l.start(started);
  CHECK(l.located(4));
  CHECK(l.newest_term() == 4);
  CHECK(l.connected_term() == 4);
  CHECK(l.connected() == rejoin);
  CHECK(l.reply(6) == nothing);  // the master learned of a newer term than it was located in
  l.lost();
  l.after_drop();
  l.wait_over();
  CHECK_FALSE(l.located(5));  // etcd's answer lags what replies showed: a deposed leader
  CHECK(l.connected_term() == 4);
  CHECK(l.connect_failed() == back_off(20ms));
  l.wait_over();
  CHECK(l.located(6));
  CHECK(l.connected_term() == 6);
  CHECK(l.watch_beyond() == 6);
}

TEST_CASE("connection lifecycle: heartbeats once per interval while ready, none otherwise") {
  lifecycle l(exact_options());
  l.start(started);
  CHECK(l.tick(started + 150ms) == nothing);  // not connected
  l.connected();
  CHECK(l.tick(started + 160ms) == nothing);  // still rejoining
  l.rejoined();
  CHECK(l.tick(started + 170ms) == heartbeat);  // due since started + 100 ms
  CHECK(l.tick(started + 220ms) == nothing);
  CHECK(l.tick(started + 269ms) == nothing);
  CHECK(l.tick(started + 270ms) == heartbeat);  // one interval after the last
  CHECK(l.tick(started + 300ms) == nothing);
  // A tick that comes late sends one round, not one per missed interval.
  CHECK(l.tick(started + 900ms) == heartbeat);
  CHECK(l.tick(started + 950ms) == nothing);
  l.lost();
  CHECK(l.tick(started + 2s) == nothing);  // none without a connection
  l.after_drop();
  l.wait_over();
  l.connected();
  l.rejoined();
  CHECK(l.tick(started + 2s) == heartbeat);  // due since before the reconnect
  l.stop();
  CHECK(l.tick(started + 10s) == nothing);
}

TEST_CASE("connection lifecycle: a heartbeat answered node_unknown asks for that node's rejoin") {
  lifecycle l = in_state(state::ready);
  CHECK(l.heartbeat_answered(errc::node_unknown) == rejoin);
  CHECK(l.heartbeat_answered(errc::success) == nothing);
  CHECK(l.heartbeat_answered(errc::rpc_failed) == nothing);  // the call failed: the connection's loss says what next
  CHECK(l.heartbeat_answered(errc::timeout) == nothing);
  CHECK(l.current() == state::ready);
  l.stop();
  CHECK(l.heartbeat_answered(errc::node_unknown) == nothing);
}

TEST_CASE("connection lifecycle: a leader in a newer term mid-call moves the connection at once, and an older one changes nothing") {
  lifecycle l(exact_options());
  l.start(started);
  REQUIRE(l.located(3));
  l.connected();
  l.rejoined();
  // A call is in flight; etcd names the leader the client is on: nothing moves.
  CHECK(l.leader_changed(3) == nothing);
  CHECK(l.leader_changed(2) == nothing);
  CHECK(l.leader_changes() == 0);
  // A newer leader: the connection drops (its calls fail with rpc_failed) and
  // the next attempt is at once, without a wait.
  CHECK(l.leader_changed(4) == dropped(cause::new_leader));
  CHECK(l.leader_changes() == 1);
  CHECK(l.newest_term() == 4);
  CHECK(l.watch_beyond() == 4);
  CHECK(l.after_drop() == connect);
  CHECK(l.backoffs() == 0);
  CHECK(l.current() == state::connecting);
  CHECK_FALSE(l.located(3));  // the old leader, still named by a lagging lookup
  CHECK(l.located(4));
  l.connected();
  CHECK(l.reply(3) == dropped(cause::stale_term));  // the deposed leader answering on the new connection is refused
  CHECK(l.after_drop() == back_off(10ms));          // not a move: the usual wait
}

TEST_CASE("connection lifecycle: a leader named while waiting to reconnect ends the wait, from the shortest wait") {
  lifecycle l(exact_options());
  l.start(started);
  l.connect_failed();
  l.wait_over();
  l.connect_failed();
  l.wait_over();
  CHECK(l.connect_failed() == back_off(40ms));
  CHECK(l.leader_changed(7) == connect);  // the endpoint ends its wait
  CHECK(l.current() == state::backing_off);
  CHECK(l.wait_over() == connect);
  CHECK(l.connect_failed() == back_off(10ms));  // the wait started afresh

  // While connecting or after a drop: no wait to end, but the next one is the shortest.
  lifecycle c(exact_options());
  c.start(started);
  c.connect_failed();
  c.wait_over();
  CHECK(c.leader_changed(1) == nothing);
  CHECK(c.connect_failed() == back_off(10ms));
  lifecycle d = in_state(state::ready);
  d.lost();
  d.after_drop();
  d.wait_over();
  d.connected();
  d.lost();
  CHECK(d.leader_changed(2) == nothing);
  CHECK(d.after_drop() == back_off(10ms));
}

TEST_CASE("connection lifecycle: the leader watch backs off while it fails and starts afresh once it answers") {
  lifecycle l = in_state(state::ready);
  CHECK(l.leader_watch_failed() == back_off(5ms));
  CHECK(l.leader_watch_failed() == back_off(10ms));
  CHECK(l.leader_watch_failed() == back_off(20ms));
  l.leader_unchanged();  // the watch timed out: etcd answers again
  CHECK(l.leader_watch_failed() == back_off(5ms));
  CHECK(l.leader_watch_failed() == back_off(10ms));
  l.leader_changed(0);
  CHECK(l.leader_watch_failed() == back_off(5ms));
  CHECK(l.backoffs() == 6);  // counted with the reconnect waits
  CHECK(l.backoff_total() == 55ms);
  CHECK(l.current() == state::ready);  // the watch's waits leave the connection alone
}

TEST_CASE("connection lifecycle: lost in every state drops only a connection that is up") {
  for (state s : {state::connecting, state::backing_off, state::joining, state::ready, state::dropped, state::stopped}) {
    CAPTURE(static_cast<int>(s));
    lifecycle l = in_state(s);
    const bool up = s == state::joining || s == state::ready;
    CHECK(l.lost() == (up ? dropped(cause::lost) : nothing));
    CHECK(l.current() == (up ? state::dropped : s));
    CHECK(l.lost() == nothing);  // once
  }
}

TEST_CASE("connection lifecycle: stop in every state drops a connection that is up, and nothing follows") {
  for (state s : {state::connecting, state::backing_off, state::joining, state::ready, state::dropped, state::stopped}) {
    CAPTURE(static_cast<int>(s));
    lifecycle l = in_state(s);
    const bool up = s == state::joining || s == state::ready;
    CHECK(l.stop() == (up ? dropped(cause::stopped) : nothing));
    CHECK(l.stopped());
    CHECK(l.connect_failed() == nothing);
    CHECK(l.wait_over() == nothing);
    CHECK(l.connected() == nothing);
    CHECK(l.rejoined() == nothing);
    CHECK(l.after_drop() == nothing);
    CHECK(l.lost() == nothing);
    CHECK(l.reply(1) == nothing);
    CHECK(l.leader_changed(100) == nothing);
    CHECK(l.tick(started + 1h) == nothing);
  }
}
