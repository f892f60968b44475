// A lane that also serves, written here and nowhere else: node_store<> takes
// it as it takes RDMA or a disk (node_transport<relay_lane>), the router
// gives it this node's data server, and two such stores move bytes through
// it over TCP. Nothing outside this file knows of it.

#include <corokv/node.hpp>
#include <corokv/net/master_server.hpp>

#include "../support/cluster.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

using namespace corokv;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace serving_lane_test {

// The call the relay lane answers on its node's data server: a
// data_read_request, answered with each item's bytes as one string of a
// keys_request (an empty one: refused). `query` is a metadata type, which
// a data server of its own does not answer.
constexpr wire::message_type relay_call = wire::message_type::query;

// Reads replicas in peers' memory segments by asking the peer's relay lane
// through the peer's data server, one call per request. Reads only (a
// store with it puts nothing to peers) and values up to 64 KiB (a string
// of the wire): enough to show a serving lane end to end.
class relay_lane {
 public:
  explicit relay_lane(asio::any_io_executor) {}

  std::string_view name() const noexcept { return "relay"; }
  std::uint64_t calls_served() const noexcept { return state_->served.load(); }
  std::uint64_t servers_given() const noexcept { return state_->servers.load(); }

  // A peer's segment whose owner runs a data server: a little better than
  // TCP, so that the relay carries what both reach.
  lane_rank rank(const segment_route& where) {
    if (!where.descriptor || where.descriptor->endpoints.tcp_port == 0) return ranks::unreachable;
    boost::system::error_code bad;
    const auto address = asio::ip::make_address(where.descriptor->endpoints.tcp_host, bad);
    if (bad) return ranks::unreachable;
    std::lock_guard lock(state_->mu);
    if (state_->own.count(where.id)) return ranks::unreachable;
    state_->peers[where.id] = tcp::endpoint(address, where.descriptor->endpoints.tcp_port);
    return ranks::tcp - 1;
  }

  asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    std::shared_ptr<state> s = state_;
    for (std::size_t k = 0; k < requests.size(); ++k) status[k] = co_await read_one(s, requests[k]);
    co_return std::error_code{};
  }
  asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    for (std::size_t k = 0; k < requests.size(); ++k) status[k] = errc::segment_not_found;
    co_return std::error_code{};
  }

  std::error_code publish(const published_segment& segment, segment_endpoints&) {
    std::lock_guard lock(state_->mu);
    state_->own[segment.id] = segment.memory;
    return {};
  }
  void withdraw(segment_id id) {
    std::lock_guard lock(state_->mu);
    state_->own.erase(id);
  }

  // serving_lane: answers relay_call with this node's own segments.
  void serve(net::data_server& server) {
    ++state_->servers;
    server.handle(relay_call,
                  net::call_handler<wire::data_read_request>(
                      [weak = std::weak_ptr<state>(state_)](const wire::data_read_request& request,
                                                            net::data_connection& connection) {
                        wire::keys_request answer;
                        // The segments answered from stay mapped while the connection lives.
                        auto holding = std::make_shared<std::vector<std::shared_ptr<memory::local_segment>>>();
                        auto s = weak.lock();
                        for (const wire::data_item& item : request.items) {
                          std::shared_ptr<memory::local_segment> memory;
                          if (s) {
                            std::lock_guard lock(s->mu);
                            if (auto it = s->own.find(item.segment); it != s->own.end()) memory = it->second;
                          }
                          if (!memory || item.length == 0 || item.offset > memory->size() ||
                              item.length > memory->size() - item.offset) {
                            answer.keys.emplace_back();
                            continue;
                          }
                          answer.keys.emplace_back(reinterpret_cast<const char*>(memory->data()) + item.offset,
                                                   item.length);
                          holding->push_back(std::move(memory));
                        }
                        if (s) ++s->served;
                        connection.hold(relay_call, std::move(holding));
                        return answer;
                      }));
  }

 private:
  struct state {
    std::mutex mu;
    std::unordered_map<segment_id, std::shared_ptr<memory::local_segment>> own;
    std::unordered_map<segment_id, tcp::endpoint> peers;
    std::atomic<std::uint64_t> served{0}, servers{0};
  };

  static asio::awaitable<errc> read_one(std::shared_ptr<state> s, read_request request) {
    tcp::endpoint peer;
    {
      std::lock_guard lock(s->mu);
      auto it = s->peers.find(request.replica.segment);
      if (it == s->peers.end()) co_return errc::segment_not_found;
      peer = it->second;
    }
    tcp::socket socket(co_await asio::this_coro::executor);
    auto [connect_ec] = co_await socket.async_connect(peer, asio::as_tuple(asio::use_awaitable));
    if (connect_ec) co_return errc::transfer_failed;
    wire::data_read_request ask;
    ask.items.push_back({request.replica.segment, request.replica.offset, request.replica.length, no_version});
    std::vector<std::byte> frame;
    if (net::append_frame(relay_call, false, 1, ask, frame) != errc::success) co_return errc::invalid_argument;
    auto [write_ec, written] = co_await asio::async_write(socket, asio::buffer(frame), asio::as_tuple(asio::use_awaitable));
    if (write_ec) co_return errc::transfer_failed;
    wire::frame_header h;
    std::vector<std::byte> payload;
    if (co_await net::read_frame(socket, {}, true, h, payload) != net::frame_status::ok) co_return errc::transfer_failed;
    wire::keys_request answer;
    if (h.type != relay_call || wire::decode(payload, answer) != errc::success || answer.keys.size() != 1)
      co_return errc::transfer_failed;
    const std::string_view bytes = answer.keys[0];
    if (bytes.size() != request.replica.length) co_return errc::segment_not_found;
    if (request.destination.size() < bytes.size()) co_return errc::buffer_too_small;
    std::memcpy(request.destination.data(), bytes.data(), bytes.size());
    co_return errc::success;
  }

  std::shared_ptr<state> state_ = std::make_shared<state>();
};

static_assert(lane<relay_lane>);
static_assert(serving_lane<relay_lane>);
static_assert(publishing_lane<relay_lane>);

corokv::node_options relay_node(std::uint16_t master_port) {
  corokv::node_options o;
  o.master.port = master_port;
  o.master.request_timeout = 500ms;
  o.master.heartbeat_interval = 50ms;
  o.transport.shared_memory = false;
  return o;
}

lane_counters counters_of(const std::vector<lane_counters>& lanes, std::string_view name) {
  for (const lane_counters& l : lanes)
    if (l.name == name) return l;
  return {};
}

}  // namespace serving_lane_test

TEST_CASE("a lane of a test's own that serves through the data server plugs into node_store with no other edit") {
  using namespace serving_lane_test;
  using namespace cluster_support;
  master_process master;
  io_thread clients;
  auto owner = make_node_store<relay_lane>(clients.io.get_executor(), relay_node(master.port));
  auto writer = make_node_store(clients.io.get_executor(), relay_node(master.port));  // memcpy + TCP
  auto reader = make_node_store<relay_lane>(clients.io.get_executor(), relay_node(master.port));
  corokv::node_options not_serving = relay_node(master.port);
  not_serving.transport.serve = false;
  auto client = make_node_store<relay_lane>(clients.io.get_executor(), not_serving);
  // The router gave each relay lane its node's data server, where there is one.
  CHECK(owner.transport().lane<relay_lane>().servers_given() == 1);
  CHECK(reader.transport().lane<relay_lane>().servers_given() == 1);
  CHECK(client.transport().lane<relay_lane>().servers_given() == 0);

  auto [seg_ec, seg] = wait(owner.add_segment(1 << 20, asio::deferred));
  REQUIRE(!seg_ec);
  dataset d("relay-", 16, 4096);
  put_all(writer, d);  // by TCP: the writer has no relay lane
  CHECK(counters_of(writer.transport().counters_by_lane(), "tcp").bytes_written == 16u * 4096);

  // The reader's relay lane asks the owner's, through the owner's data server.
  check_read_back(reader, d);
  const auto relayed = counters_of(reader.transport().counters_by_lane(), "relay");
  CHECK(relayed.bytes_read == 16u * 4096);
  CHECK(counters_of(reader.transport().counters_by_lane(), "tcp").bytes_read == 0);
  CHECK(owner.transport().lane<relay_lane>().calls_served() == 16);
  // A store whose own data server does not serve still reads through its
  // relay lane: the serving side is the owner's.
  check_read_back(client, d);
  CHECK(owner.transport().lane<relay_lane>().calls_served() == 32);

  // The writer's data server has no relay lane to answer the call (a
  // metadata type): it closes that connection, and counts it.
  asio::io_context io;
  tcp::socket stranger(io);
  stranger.connect(writer.transport().lane<tcp_lane>().data_endpoint());
  wire::data_read_request ask;
  ask.items.push_back({seg, 0, 64, no_version});
  std::vector<std::byte> frame;
  REQUIRE(net::append_frame(relay_call, false, 1, ask, frame) == errc::success);
  asio::write(stranger, asio::buffer(frame));
  std::array<char, 1> one{};
  boost::system::error_code closed;
  stranger.read_some(asio::buffer(one), closed);
  CHECK((closed == asio::error::eof || closed == asio::error::connection_reset));
  CHECK(writer.transport().lane<tcp_lane>().data_server()->stats().protocol_errors == 1);

  // A handler that throws (a lane's bug) ends that connection only: the
  // server counts it and goes on accepting.
  const auto server = writer.transport().lane<tcp_lane>().data_server();
  server->handle(relay_call, net::call_handler<wire::data_read_request>(
                                 [](const wire::data_read_request&, net::data_connection&) -> wire::keys_request {
                                   throw std::runtime_error("a lane's bug");
                                 }));
  for (int attempt = 0; attempt < 2; ++attempt) {
    tcp::socket again(io);
    again.connect(writer.transport().lane<tcp_lane>().data_endpoint());
    asio::write(again, asio::buffer(frame));
    boost::system::error_code ended;
    again.read_some(asio::buffer(one), ended);
    CHECK((ended == asio::error::eof || ended == asio::error::connection_reset));
  }
  CHECK(server->stats().handler_failures == 2);
  CHECK(server->stats().protocol_errors == 1);
}
