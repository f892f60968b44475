#pragma once
// The TCP lane: replicas on any node that runs a data server, reached over
// TCP (rank tcp). A batch's ranges are grouped by node: one exchange per
// node, all nodes at once (net::data_client). The lane also runs this
// node's data server (unless options.serve is false; hosting_lane), so
// that the segments published to it are reachable by the others, and
// announces its address in their endpoints. Other lanes serve through the
// same server (serving_lane, lane.hpp).

#include <corokv/detail/guarded_spawn.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/segment_registry.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/net/address.hpp>
#include <corokv/net/data_client.hpp>
#include <corokv/net/data_server.hpp>
#include <corokv/transport/destination_groups.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/request_shape.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv::transport {

struct tcp_lane_options {
  // Where this node's data server listens, and the address peers use for it.
  boost::asio::ip::tcp::endpoint listen{boost::asio::ip::address_v4::loopback(), 0};
  std::string advertise_host = "127.0.0.1";  // an address, or a name looked up once, at construction
  bool serve = true;                         // run a data server for this node's segments
  net::data_client_options client;
};

struct tcp_lane_stats {
  std::uint64_t exchanges = 0;  // node batches: one per node per call
};

class tcp_lane {
 public:
  // Throws boost::system::system_error if the advertised host has no
  // address of the listener's family, or the listener cannot bind.
  tcp_lane(boost::asio::any_io_executor ex, tcp_lane_options options = {})
      : state_(std::make_shared<state>(std::move(options))) {
    state& s = *state_;
    if (!s.options.serve) return;
    // Peers connect to an address: a name given here is looked up now,
    // once (address.hpp). It must be of the family the server listens on
    // ("localhost" often resolves to ::1 first, the listener is IPv4).
    boost::system::error_code ec;
    const auto advertised = net::resolve_now(s.options.advertise_host, 0, ec);
    const auto family = s.options.listen.protocol();
    const auto usable = std::find_if(advertised.begin(), advertised.end(),
                                     [&](const auto& e) { return e.protocol() == family; });
    if (ec || usable == advertised.end())
      throw boost::system::system_error(ec ? ec : make_error_code(boost::asio::error::host_not_found),
                                        "corokv: advertise_host " + s.options.advertise_host +
                                            " has no address of the data listener's family");
    s.options.advertise_host = usable->address().to_string();
    s.server = std::make_shared<net::data_server>(ex, s.served, s.options.listen, s.options.client.limits);
    s.server->start();
  }
  tcp_lane(tcp_lane&&) noexcept = default;
  ~tcp_lane() {
    if (state_ && state_->server) state_->server->stop();
  }

  std::string_view name() const noexcept { return "tcp"; }

  // Where this node's data server listens (port 0 if not serving).
  boost::asio::ip::tcp::endpoint data_endpoint() const {
    return state_->server ? state_->server->local_endpoint() : boost::asio::ip::tcp::endpoint{};
  }
  std::shared_ptr<net::data_server> data_server() const { return state_->server; }
  // How peers reach this node's data server: what publish() writes into a
  // segment's endpoints (nothing if not serving).
  void advertise(segment_endpoints& where) const {
    if (!state_->server) return;
    where.tcp_host = state_->options.advertise_host;
    where.tcp_port = state_->server->local_endpoint().port();
  }
  tcp_lane_stats stats() const noexcept { return {state_->exchanges.load(std::memory_order_relaxed)}; }

  // Any segment whose owner advertises a data server address.
  lane_rank rank(const segment_route& where) {
    if (!where.descriptor) return ranks::unreachable;
    state& s = *state_;
    {
      std::shared_lock lock(s.mu);
      if (auto it = s.peers.find(where.id); it != s.peers.end())
        return it->second ? ranks::tcp : ranks::unreachable;
    }
    // An address, as the owner advertised it (address.hpp): parsed, never
    // looked up. Anything else leaves the segment unreachable by TCP.
    std::optional<net::data_peer> peer;
    const segment_endpoints& e = where.descriptor->endpoints;
    boost::system::error_code bad_address;
    const auto address = boost::asio::ip::make_address(e.tcp_host, bad_address);
    if (!bad_address && e.tcp_port != 0) peer = net::data_peer(address, e.tcp_port);
    std::unique_lock lock(s.mu);
    s.peers[where.id] = peer;
    return peer ? ranks::tcp : ranks::unreachable;
  }

  boost::asio::awaitable<std::error_code> read(std::span<const memory::read_request> requests, std::span<errc> status) {
    co_return co_await transfer<memory::read_request>(requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const memory::write_request> requests, std::span<errc> status) {
    co_return co_await transfer<memory::write_request>(requests, status);
  }

  std::error_code publish(const published_segment& segment, segment_endpoints& where) {
    state& s = *state_;
    s.served->add(segment.id, segment.memory->data(), segment.memory->size(), segment.memory);
    advertise(where);
    return {};
  }
  void withdraw(segment_id id) { state_->served->remove(id); }

  void forget(std::span<const segment_id> gone) {
    std::unique_lock lock(state_->mu);
    for (segment_id id : gone) state_->peers.erase(id);
  }

 private:
  struct state {
    explicit state(tcp_lane_options o) : options(std::move(o)), client(options.client) {}
    tcp_lane_options options;
    net::data_client client;
    std::shared_ptr<memory::segment_registry> served = std::make_shared<memory::segment_registry>();
    std::shared_ptr<net::data_server> server;
    std::shared_mutex mu;  // guards peers
    std::unordered_map<segment_id, std::optional<net::data_peer>> peers;
    std::atomic<std::uint64_t> exchanges{0};
  };

  template <class Request>
  static boost::asio::awaitable<void> exchange(std::shared_ptr<state> s, net::data_peer peer,
                                               std::span<const Request> requests, std::span<errc> status) {
    if constexpr (std::is_same_v<Request, memory::read_request>)
      co_await s->client.read(peer, requests, status);
    else
      co_await s->client.write(peer, requests, status);
  }

  template <class Request>
  boost::asio::awaitable<std::error_code> transfer(std::span<const Request> requests, std::span<errc> status) {
    namespace asio = boost::asio;
    std::shared_ptr<state> s = state_;
    // Each request's node; neighbours mostly share a segment.
    std::vector<net::data_peer> peer_of(requests.size());
    std::vector<bool> known(requests.size());
    {
      std::shared_lock lock(s->mu);
      for (std::size_t k = 0; k < requests.size(); ++k) {
        if (k > 0 && requests[k].replica.segment == requests[k - 1].replica.segment) {
          peer_of[k] = peer_of[k - 1];
          known[k] = known[k - 1];
          continue;
        }
        auto it = s->peers.find(requests[k].replica.segment);
        known[k] = it != s->peers.end() && it->second;
        if (known[k]) peer_of[k] = *it->second;
      }
    }
    // The shape, for a caller other than the router (request_shape.hpp).
    for (std::size_t k = 0; k < requests.size(); ++k) {
      if (!known[k])
        status[k] = errc::segment_not_found;
      else if ((status[k] = request_shape(requests[k])) != errc::success)
        known[k] = false;
    }

    // The usual batch names one node: its ranges go as they are.
    const bool one_peer = std::all_of(known.begin(), known.end(), [](bool b) { return b; }) &&
                          std::all_of(peer_of.begin(), peer_of.end(), [&](const auto& p) { return p == peer_of[0]; });
    if (one_peer) {
      s->exchanges.fetch_add(1, std::memory_order_relaxed);
      co_await exchange<Request>(s, peer_of[0], requests, status);
      co_return std::error_code{};
    }

    // One exchange per node, all at once.
    destination_groups<net::data_peer> by_peer;
    for (std::size_t k = 0; k < requests.size(); ++k)
      if (known[k]) by_peer.add(peer_of[k], static_cast<std::uint32_t>(k));
    struct part {
      std::vector<Request> batch;
      std::vector<errc> status;
    };
    std::vector<part> parts(by_peer.size());
    for (std::size_t g = 0; g < parts.size(); ++g) {
      for (std::uint32_t k : by_peer.index(g)) parts[g].batch.push_back(requests[k]);
      parts[g].status.assign(parts[g].batch.size(), errc::transfer_failed);
    }
    s->exchanges.fetch_add(parts.size(), std::memory_order_relaxed);
    if (parts.size() == 1) {
      co_await exchange<Request>(s, by_peer.key(0), parts[0].batch, parts[0].status);
    } else if (parts.size() > 1) {
      // Each exchange is spawned safe to cancel (detail/guarded_spawn.hpp: a
      // bare co_spawn is not, with Asio 1.81) and with this coroutine's
      // throw_if_cancelled, as if awaited here.
      auto ex = co_await asio::this_coro::executor;
      const bool throws = co_await asio::this_coro::throw_if_cancelled();
      using op = decltype(detail::guarded_spawn(ex, std::declval<asio::awaitable<void>>(), asio::deferred));
      std::vector<op> ops;
      ops.reserve(parts.size());
      for (std::size_t g = 0; g < parts.size(); ++g) {
        auto one = detail::throwing_if_cancelled(throws, exchange<Request>(s, by_peer.key(g), parts[g].batch, parts[g].status));
        ops.push_back(detail::guarded_spawn(ex, std::move(one), asio::deferred));
      }
      co_await asio::experimental::make_parallel_group(std::move(ops))
          .async_wait(asio::experimental::wait_for_all(), asio::deferred);
    }
    for (std::size_t g = 0; g < parts.size(); ++g) by_peer.scatter(g, parts[g].status, status);
    co_return std::error_code{};
  }

  std::shared_ptr<state> state_;
};

static_assert(lane<tcp_lane>);
static_assert(publishing_lane<tcp_lane>);
static_assert(directory_following_lane<tcp_lane>);
static_assert(hosting_lane<tcp_lane>);

}  // namespace corokv::transport
