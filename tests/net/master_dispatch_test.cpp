// The master's dispatch without a socket: a request frame in, the response
// frame (or the verdict to close) out, against a real meta::service. The
// same decisions over TCP are in master_server_test.cpp.

#include <corokv/meta/service.hpp>
#include <corokv/net/master_dispatch.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace corokv;
using namespace corokv::net;

namespace {

// A role whose answers the test sets.
struct scripted_role final : master_role {
  std::uint64_t current_term = 7;
  bool answering = true;
  std::uint64_t newest_seen = 0;

  std::uint64_t term() const override { return current_term; }
  bool may_answer() const override { return answering; }
  void newer_term_seen(std::uint64_t t) override { newest_seen = t; }
  std::uint64_t position() const override { return 0; }
  boost::asio::awaitable<bool> replicated(std::uint64_t) override { co_return true; }
  boost::asio::awaitable<void> serve_follower(std::shared_ptr<boost::asio::ip::tcp::socket>, std::uint64_t,
                                              std::string_view) override {
    co_return;
  }
};

struct dispatcher {
  meta::service service;
  master_role* role = nullptr;
  wire::limits limits;
  master_stats stats;
  std::vector<std::byte> payload;  // kept: a follow verdict names the follower by a view into it
  std::vector<std::byte> out;
  wire::frame_header answered;

  // Dispatches `message` as a request of `type`; the verdict.
  template <class M>
  dispatch_result send(wire::message_type type, const M& message, std::uint64_t id = 1, std::uint64_t term = 0) {
    std::vector<std::byte> encoded;
    REQUIRE(wire::encode(message, encoded) == errc::success);
    return send_raw(type, encoded, id, term);
  }
  dispatch_result send_raw(wire::message_type type, std::span<const std::byte> bytes, std::uint64_t id = 1,
                           std::uint64_t term = 0) {
    payload.assign(bytes.begin(), bytes.end());
    const wire::frame_header h{type, false, id, static_cast<std::uint32_t>(payload.size()), term};
    return dispatch_request(service, role, limits, h, payload, out, stats);
  }

  // The response frame of the last reply, decoded as `R`.
  template <class R>
  R reply() {
    REQUIRE(wire::decode_header(out, limits, answered) == errc::success);
    REQUIRE(answered.response);
    REQUIRE(answered.payload_size == out.size() - wire::header_size);
    R r;
    REQUIRE(wire::decode(std::span<const std::byte>(out).subspan(wire::header_size), r, limits) == errc::success);
    return r;
  }

  // Sends and expects a reply of shape R.
  template <class R, class M>
  R call(wire::message_type type, const M& message) {
    REQUIRE(send(type, message).verdict == dispatch_verdict::reply);
    return reply<R>();
  }
};

}  // namespace

TEST_CASE("dispatch: every metadata operation is served by the service and answered in its shape") {
  dispatcher d;
  using wire::message_type;
  CHECK(d.call<wire::status_response>(message_type::register_node, wire::node_request{5}).status == errc::success);
  CHECK(d.answered.type == message_type::register_node);
  CHECK(d.answered.request_id == 1);
  CHECK(d.answered.term == 0);  // a lone master
  CHECK(d.call<wire::status_response>(message_type::heartbeat, wire::node_request{5}).status == errc::success);
  CHECK(d.call<wire::status_response>(message_type::heartbeat, wire::node_request{6}).status == errc::node_unknown);

  wire::mount_request mount;
  mount.node = 5;
  mount.size = 1 << 20;
  const auto mounted = d.call<wire::mount_response>(message_type::mount_segment, mount);
  REQUIRE(mounted.status == errc::success);
  const auto listed = d.call<wire::segments_response>(message_type::list_segments, wire::list_segments_request{});
  REQUIRE(listed.segments.size() == 1);
  CHECK(listed.segments[0].id == mounted.id);
  CHECK(listed.segments[0].node == 5);

  wire::put_start_request start{{"a", "b"}, {100, 200}, 1, 5};
  const auto reserved = d.call<wire::put_start_response>(message_type::put_start, start);
  REQUIRE(reserved.status == errc::success);
  REQUIRE(reserved.results.size() == 2);
  CHECK(reserved.results[0].status == errc::success);
  const wire::versioned_keys_request commit{{"a", "b"}, {reserved.results[0].version, reserved.results[1].version}};
  const auto committed = d.call<wire::statuses_response>(message_type::put_end, commit);
  CHECK(committed.results == std::vector<errc>{errc::success, errc::success});

  const auto found = d.call<wire::query_response>(message_type::query, wire::query_request{{"a", "zz"}, 0});
  REQUIRE(found.results.size() == 2);
  CHECK(found.results[0].status == errc::success);
  CHECK(found.results[0].size == 100);
  CHECK(found.results[1].status == errc::not_found);
  CHECK(d.call<wire::statuses_response>(message_type::exist, wire::keys_request{{"b", "zz"}}).results ==
        std::vector<errc>{errc::success, errc::not_found});
  const auto prefix = d.call<wire::prefix_response>(message_type::exist_prefix, wire::keys_request{{"a", "zz", "b"}});
  CHECK(prefix.result.matched == 1);
  CHECK(prefix.result.stopped_by == errc::not_found);
  CHECK(d.call<wire::statuses_response>(message_type::remove, wire::keys_request{{"a"}}).results ==
        std::vector<errc>{errc::success});
  CHECK(d.call<wire::count_response>(message_type::remove_all, wire::remove_all_request{}).count == 1);
  CHECK(d.call<wire::status_response>(message_type::unmount_segment, wire::unmount_request{mounted.id}).status ==
        errc::success);
  CHECK(d.call<wire::status_response>(message_type::unregister_node, wire::node_request{5}).status == errc::success);
  CHECK(d.stats.requests == 14);
  CHECK(d.stats.protocol_errors == 0);
}

TEST_CASE("dispatch: a call that fails as a whole answers its status with no per-key results") {
  dispatcher d;
  // Sizes that do not match the keys.
  const auto reserved =
      d.call<wire::put_start_response>(wire::message_type::put_start, wire::put_start_request{{"a", "b"}, {1}, 1, 5});
  CHECK(reserved.status == errc::invalid_argument);
  CHECK(reserved.results.empty());
  // Node 0 asks for demotions: refused, with no work.
  const auto work = d.call<wire::demotions_response>(wire::message_type::demote_start, wire::demote_start_request{0, 8, 1 << 20, 0, 0});
  CHECK(work.status == errc::invalid_argument);
  CHECK(work.work.copies.empty());
}

TEST_CASE("dispatch: a payload that does not decode as its request closes the connection") {
  dispatcher d;
  const std::vector<std::byte> garbage{std::byte{1}, std::byte{2}, std::byte{3}};
  CHECK(d.send_raw(wire::message_type::put_start, garbage).verdict == dispatch_verdict::close);
  CHECK(d.stats.protocol_errors == 1);
  CHECK(d.stats.requests == 0);
  // A well-formed request that carries bytes after its table, too.
  std::vector<std::byte> longer;
  REQUIRE(wire::encode(wire::node_request{1}, longer) == errc::success);
  longer.push_back(std::byte{0});
  CHECK(d.send_raw(wire::message_type::register_node, longer).verdict == dispatch_verdict::close);
  CHECK(d.stats.protocol_errors == 2);
}

TEST_CASE("dispatch: a data-plane request is refused as a call, in the shape its sender expects") {
  dispatcher d;
  const wire::data_read_request read{{{1, 0, 10, 1}}};
  REQUIRE(d.send(wire::message_type::data_read, read, 9).verdict == dispatch_verdict::reply);
  const auto r = d.reply<wire::data_read_response>();
  CHECK(r.status == errc::invalid_argument);
  CHECK(d.answered.type == wire::message_type::data_read);
  CHECK(d.answered.request_id == 9);
  REQUIRE(d.send(wire::message_type::rdma_connect, wire::rdma_connect_request{}).verdict == dispatch_verdict::reply);
  CHECK(d.reply<wire::rdma_connect_response>().status == errc::invalid_argument);
}

TEST_CASE("dispatch: a response over the limits is a failed call in the request's shape") {
  dispatcher d;
  wire::mount_request mount;
  mount.node = 1;
  mount.size = 1 << 20;
  mount.endpoints.host_id = std::string(200, 'h');
  for (int i = 0; i < 4; ++i) REQUIRE(d.call<wire::mount_response>(wire::message_type::mount_segment, mount).status == errc::success);
  d.limits.max_payload = 512;  // four descriptors of over 200 bytes each do not fit
  const auto listed = d.call<wire::segments_response>(wire::message_type::list_segments, wire::list_segments_request{});
  CHECK(listed.status == errc::invalid_argument);
  CHECK(listed.segments.empty());
}

TEST_CASE("dispatch: follow and replica_ack are for replicated masters only") {
  dispatcher d;
  CHECK(d.send(wire::message_type::follow, wire::follow_request{"f1"}).verdict == dispatch_verdict::close);
  CHECK(d.stats.protocol_errors == 1);
  CHECK(d.send(wire::message_type::replica_ack, wire::replica_ack_request{}).verdict == dispatch_verdict::close);
  CHECK(d.stats.protocol_errors == 2);

  scripted_role role;
  d.role = &role;
  const auto followed = d.send(wire::message_type::follow, wire::follow_request{"f1"});
  CHECK(followed.verdict == dispatch_verdict::follow);
  CHECK(followed.follower == "f1");
  CHECK(d.send(wire::message_type::replica_ack, wire::replica_ack_request{}).verdict == dispatch_verdict::close);
  CHECK(d.stats.protocol_errors == 3);
}

TEST_CASE("dispatch: with a role, replies carry its term, and a role that may not answer closes unanswered") {
  dispatcher d;
  scripted_role role;
  d.role = &role;
  CHECK(d.call<wire::status_response>(wire::message_type::register_node, wire::node_request{3}).status == errc::success);
  CHECK(d.answered.term == 7);
  CHECK(role.newest_seen == 0);

  // A request from a newer term reaches the role, even when it is then refused.
  role.answering = false;
  CHECK(d.send(wire::message_type::register_node, wire::node_request{4}, 2, /*term=*/9).verdict == dispatch_verdict::close);
  CHECK(role.newest_seen == 9);
  CHECK(d.stats.refused == 1);
  // Refused before the service saw it: node 4 is unknown.
  CHECK(d.service.heartbeat(4) == errc::node_unknown);
  // Refused for a data-plane request too.
  CHECK(d.send(wire::message_type::data_read, wire::data_read_request{}).verdict == dispatch_verdict::close);
  CHECK(d.stats.refused == 2);
}
