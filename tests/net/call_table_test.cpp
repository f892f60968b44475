// The metadata connection's call table and rejoin list without sockets:
// request ids written through the wire layer, pipelining, control calls
// before readiness, replies matched in any order, stale and mismatched
// replies, calls lost with a connection, and timeouts; the leader's
// replication log; and the backoff of every loop that reconnects.

#include <corokv/detail/backoff.hpp>
#include <corokv/net/call_table.hpp>
#include <corokv/net/rejoin_list.hpp>
#include <corokv/net/replication_log.hpp>
#include <corokv/wire/messages.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;

namespace {

// A handler that records how its call ended.
struct recorded {
  std::string* outcome;
  std::string name;
};

using table = net::call_table<recorded>;

std::vector<std::byte> frame_of(wire::message_type type) {
  std::vector<std::byte> payload;
  REQUIRE(wire::encode(wire::node_request{42}, payload) == errc::success);
  const auto header = wire::encode_header({type, false, 0, static_cast<std::uint32_t>(payload.size())});
  std::vector<std::byte> frame(header.begin(), header.end());
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

// The frames in a written buffer, by their headers.
std::vector<wire::frame_header> headers_in(const std::vector<std::byte>& bytes) {
  std::vector<wire::frame_header> out;
  for (std::size_t at = 0; at < bytes.size();) {
    wire::frame_header h;
    REQUIRE(wire::decode_header(std::span(bytes).subspan(at), {}, h) == errc::success);
    out.push_back(h);
    at += wire::header_size + h.payload_size;
  }
  return out;
}

wire::frame_header reply_to(const wire::frame_header& request) {
  return {request.type, true, request.request_id, 0};
}

const time_point t0 = time_point{} + 1h;

}  // namespace

TEST_CASE("call table: each call gets its own request id, written into its frame, and pipelined calls go out together") {
  table calls;
  std::string outcome;
  const auto a = calls.add(wire::message_type::heartbeat, frame_of(wire::message_type::heartbeat), {&outcome, "a"},
                           t0 + 5s, false);
  const auto b = calls.add(wire::message_type::register_node, frame_of(wire::message_type::register_node),
                           {&outcome, "b"}, t0 + 5s, false);
  CHECK(a != b);
  std::vector<std::byte> out;
  CHECK(calls.take_sendable(true, out) == 2);
  auto headers = headers_in(out);
  REQUIRE(headers.size() == 2);
  CHECK(headers[0].request_id == a);
  CHECK(headers[1].request_id == b);
  CHECK(headers[1].type == wire::message_type::register_node);
  CHECK(calls.sent(a) == true);
  out.clear();
  CHECK(calls.take_sendable(true, out) == 0);  // nothing is sent twice
}

TEST_CASE("call table: control calls go out before the connection is ready, the others wait for it") {
  table calls;
  std::string outcome;
  const auto normal = calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "q"}, t0 + 5s,
                                false);
  const auto control = calls.add(wire::message_type::register_node, frame_of(wire::message_type::register_node),
                                 {&outcome, "r"}, t0 + 5s, true);
  std::vector<std::byte> out;
  CHECK(calls.has_sendable(false));
  CHECK(calls.take_sendable(false, out) == 1);
  CHECK(headers_in(out)[0].request_id == control);
  CHECK(calls.sent(normal) == false);
  CHECK_FALSE(calls.has_sendable(false));
  CHECK(calls.has_sendable(true));
  out.clear();
  CHECK(calls.take_sendable(true, out) == 1);
  CHECK(headers_in(out)[0].request_id == normal);
}

TEST_CASE("call table: replies match their calls in any order, and stale and mismatched replies are told apart") {
  table calls;
  std::string outcome;
  calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "first"}, t0 + 5s, false);
  calls.add(wire::message_type::exist, frame_of(wire::message_type::exist), {&outcome, "second"}, t0 + 5s, false);
  std::vector<std::byte> out;
  calls.take_sendable(true, out);
  auto headers = headers_in(out);
  auto second = calls.on_reply(reply_to(headers[1]));
  REQUIRE(second.kind == table::reply_kind::answered);
  CHECK(second.handler->name == "second");
  auto again = calls.on_reply(reply_to(headers[1]));
  CHECK(again.kind == table::reply_kind::stale);  // answered already (or timed out)
  auto wrong = reply_to(headers[0]);
  wrong.type = wire::message_type::remove;
  CHECK(calls.on_reply(wrong).kind == table::reply_kind::mismatched);
  auto first = calls.on_reply(reply_to(headers[0]));
  REQUIRE(first.kind == table::reply_kind::answered);
  CHECK(first.handler->name == "first");
  CHECK(calls.empty());
}

TEST_CASE("call table: a reply to a call not yet sent means the stream is broken") {
  table calls;
  std::string outcome;
  const auto id = calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "q"}, t0 + 5s,
                            false);
  CHECK(calls.on_reply({wire::message_type::query, true, id, 0}).kind == table::reply_kind::mismatched);
}

TEST_CASE("call table: a lost connection fails the calls sent on it, and unsent calls wait for the next one") {
  table calls;
  std::string outcome;
  calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "sent"}, t0 + 5s, false);
  std::vector<std::byte> out;
  calls.take_sendable(true, out);
  const auto waiting = calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "waiting"},
                                 t0 + 5s, false);
  std::vector<std::string> lost;
  CHECK(calls.fail_sent([&](recorded r) { lost.push_back(r.name); }) == 1);
  CHECK(lost == std::vector<std::string>{"sent"});
  CHECK(calls.size() == 1);
  out.clear();
  CHECK(calls.take_sendable(true, out) == 1);  // goes out on the new connection
  CHECK(headers_in(out)[0].request_id == waiting);
}

TEST_CASE("call table: calls past their deadline fail, sent or not, and the rest stay") {
  table calls;
  std::string outcome;
  calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "sent-early"}, t0 + 1s, false);
  std::vector<std::byte> out;
  calls.take_sendable(true, out);
  calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "queued-early"}, t0 + 1s, false);
  calls.add(wire::message_type::query, frame_of(wire::message_type::query), {&outcome, "late"}, t0 + 9s, false);
  std::vector<std::string> expired;
  CHECK(calls.expire(t0, [&](recorded r) { expired.push_back(r.name); }) == 0);
  CHECK(calls.expire(t0 + 1s, [&](recorded r) { expired.push_back(r.name); }) == 2);
  std::sort(expired.begin(), expired.end());
  CHECK(expired == std::vector<std::string>{"queued-early", "sent-early"});
  out.clear();
  CHECK(calls.take_sendable(true, out) == 1);  // the expired queued call is skipped
  std::vector<std::string> all;
  CHECK(calls.fail_all([&](recorded r) { all.push_back(r.name); }) == 1);
  CHECK(all == std::vector<std::string>{"late"});
  CHECK(calls.empty());
}

TEST_CASE("rejoin list: nodes and their segments come back as remounts until the node leaves") {
  net::rejoin_list rejoins;
  rejoins.remember_node(1);
  rejoins.remember_node(1);
  rejoins.remember_node(2);
  wire::mount_request m{1, 4096, 77, {}, false};
  rejoins.remember_mount(m);
  CHECK(rejoins.nodes() == std::vector<node_id>{1, 2});
  auto remounts = rejoins.remounts_of(1);
  REQUIRE(remounts.size() == 1);
  CHECK(remounts[0].requested == 77);
  CHECK(remounts[0].remount);
  CHECK(rejoins.remounts_of(2).empty());
  rejoins.forget_node(1);
  CHECK(rejoins.nodes() == std::vector<node_id>{2});
  CHECK(rejoins.remounts_of(1).empty());
}

// ------------------------------------------------------------ replication_log

namespace {
std::vector<std::byte> record_of(std::size_t n, std::uint8_t fill) { return std::vector<std::byte>(n, std::byte{fill}); }
}  // namespace

TEST_CASE("replication_log: a position is durable once the required followers in sync applied it") {
  corokv::net::replication_log_options o;
  o.sync_followers = 2;
  corokv::net::replication_log log(o);
  CHECK(log.append(record_of(10, 1)) == 1);  // no follower: nothing kept, and nothing durable
  CHECK_FALSE(log.established());
  CHECK_FALSE(log.is_durable(0));  // not even what the leader holds already
  CHECK(log.durable() == 0);
  const auto a = log.add_follower(log.last());
  const auto b = log.add_follower(log.last());
  CHECK(log.required() == 2);
  CHECK(log.acked(a, 1));
  CHECK(log.in_sync() == 1);
  CHECK_FALSE(log.established());  // one follower holds the state: the leader must not answer alone
  CHECK_FALSE(log.is_durable(1));
  CHECK(log.append(record_of(10, 2)) == 2);
  CHECK(log.append(record_of(10, 3)) == 3);
  CHECK_FALSE(log.acked(a, 3));  // not sent yet: a lie
  log.sent(a, 3);
  log.sent(b, 3);
  CHECK(log.acked(a, 3));
  CHECK_FALSE(log.is_durable(1));  // b is not in sync: one ack is not enough
  CHECK(log.acked(b, 2));
  CHECK(log.established());
  CHECK(log.durable() == 2);  // the second-highest ack
  CHECK(log.is_durable(2));
  CHECK_FALSE(log.is_durable(3));
  CHECK(log.behind(3) == std::vector<corokv::net::replication_log::follower_id>{b});
  CHECK(log.max_lag() == 1);
  log.remove_follower(b);
  CHECK(log.durable() == 2);      // what was durable stays so: b had it
  CHECK_FALSE(log.is_durable(3));  // one follower left: nothing newer becomes durable
  const auto c = log.add_follower(log.last());  // joins with a snapshot at 3
  CHECK(log.acked(c, 3));
  CHECK(log.is_durable(3));
}

TEST_CASE("replication_log: with sync_followers 0 the leader acknowledges alone") {
  corokv::net::replication_log_options o;
  o.sync_followers = 0;
  corokv::net::replication_log log(o);
  CHECK(log.established());
  CHECK(log.is_durable(0));
  log.append(record_of(10, 1));
  CHECK(log.is_durable(1));
  const auto a = log.add_follower(log.last());
  log.append(record_of(10, 2));
  CHECK(log.is_durable(2));  // nothing waits for a
  log.sent(a, 2);
  CHECK(log.acked(a, 2));
}

TEST_CASE("replication_log: slices follow positions across chunks, and sent chunks are dropped") {
  corokv::net::replication_log_options o;
  o.chunk_bytes = 100;
  o.max_backlog_bytes = 1000;
  corokv::net::replication_log log(o);
  const auto f = log.add_follower(0);
  for (std::uint8_t i = 1; i <= 30; ++i) log.append(record_of(30, i));  // 4 records per chunk
  std::uint64_t pos = 0;
  std::size_t slices = 0;
  for (;;) {
    const auto s = log.after(pos, 70);
    if (s.count == 0) break;
    REQUIRE(s.first == pos + 1);
    CHECK(s.bytes.size() == 30 * s.count);
    CHECK(s.bytes.size() <= 70);
    for (std::size_t r = 0; r < s.count; ++r) CHECK(s.bytes[30 * r] == std::byte(s.first + r));
    pos = s.first + s.count - 1;
    log.sent(f, pos);
    ++slices;
  }
  CHECK(pos == 30);
  CHECK(slices >= 15);
  CHECK(log.kept_bytes() <= 4 * 30);  // all but the chunk being filled
  CHECK_FALSE(log.too_far_behind(f));
  for (int i = 0; i < 40; ++i) log.append(record_of(30, 9));
  CHECK(log.too_far_behind(f));  // 1200 unsent bytes > 1000
}

// ------------------------------------------------------------ backoff

TEST_CASE("backoff: waits double from initial up to max, each drawn from its upper half, and a success starts afresh") {
  detail::backoff b({10ms, 160ms, 0.5}, 42);
  CHECK(b.floor() == 5ms);
  std::vector<duration> ceilings{10ms, 20ms, 40ms, 80ms, 160ms, 160ms, 160ms};
  for (duration ceiling : ceilings) {
    CHECK(b.ceiling() == ceiling);
    const duration d = b.next();
    CHECK(d <= ceiling);
    CHECK(d >= ceiling / 2);
  }
  CHECK(b.failures() == 7);
  CHECK(b.waits() == 7);
  b.reset();
  CHECK(b.ceiling() == 10ms);
  CHECK(b.next() <= 10ms);
  CHECK(b.waits() == 8);
}

TEST_CASE("backoff: the jitter spreads clients that failed together, reproducibly per seed") {
  // The first wait of 20 clients.
  auto first_waits = [](std::uint64_t seed) {
    detail::backoff b({100ms, 1s, 0.5}, seed);
    std::vector<duration> out;
    for (int i = 0; i < 20; ++i) {
      b.reset();
      out.push_back(b.next());
    }
    return out;
  };
  const auto first = first_waits(1), again = first_waits(1), other = first_waits(2);
  CHECK(first == again);
  CHECK(first != other);
  const auto [lo, hi] = std::minmax_element(first.begin(), first.end());
  CHECK(*lo >= 50ms);
  CHECK(*hi <= 100ms);
  CHECK(*hi - *lo >= 10ms);  // 20 draws from [50, 100] ms are not all alike
  // No jitter: exactly the bound; a nonsensical option is made sane.
  detail::backoff exact({8ms, 20ms, 0.0});
  CHECK(exact.next() == 8ms);
  CHECK(exact.next() == 16ms);
  CHECK(exact.next() == 20ms);
  detail::backoff odd({0ms, -1ms, 7.0});
  CHECK(odd.ceiling() > 0ms);
  CHECK(odd.options().jitter == 1.0);
}

TEST_CASE("backoff: the total is the sum of the waits, so a counter can show them") {
  detail::backoff b({1ms, 4ms, 0.25}, 7);
  duration sum{};
  for (int i = 0; i < 10; ++i) sum += b.next();
  CHECK(b.total() == sum);
  CHECK(sum <= 35ms);  // 1 + 2 + 8 * 4 ms at most
  CHECK(sum >= 26ms);  // and three quarters of that at least
}
