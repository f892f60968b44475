#pragma once
// The transport of a store in a cluster: the lane router with the memcpy
// lane (this process, and same-host peers through their mapped memfds) and
// the TCP lane (every other node's data server, and this node's own). Per
// replica the best of them that reaches it; where a segment lives comes
// from the metadata service's segment list, fetched when a batch names a
// segment not seen before (so the first batch touching a new node costs one
// extra metadata round trip, and later ones none).
//
// Other lanes (RDMA verbs) join by naming a router with more lanes; see
// lane_router.hpp.

#include <corokv/net/data_client.hpp>
#include <corokv/transport/data_transport.hpp>
#include <corokv/transport/lane_router.hpp>
#include <corokv/transport/memcpy_lane.hpp>
#include <corokv/transport/tcp_lane.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <functional>
#include <vector>

#include <memory>
#include <string>
#include <utility>

namespace corokv {

struct cluster_transport_options {
  // Where this node's data server listens, and the address peers use for it.
  boost::asio::ip::tcp::endpoint data_listen{boost::asio::ip::address_v4::loopback(), 0};
  std::string advertise_host = "127.0.0.1";  // an address, or a name looked up once, at construction
  bool serve = true;              // run a data server for this node's segments
  bool shared_memory = true;      // shareable segments; map same-host peers' segments
  net::data_client_options tcp;
  // This process's segment registry: stores that share one read each
  // other's segments by memcpy. Null: a registry of this store's own.
  std::shared_ptr<segment_registry> process_segments;
  // Only these lanes carry transfers ("memcpy", "tcp", "rdma"); empty: all.
  std::vector<std::string> lanes;
};

using cluster_transport = lane_router<memcpy_lane, tcp_lane>;

static_assert(data_transport<cluster_transport>);
static_assert(synchronous_transport<cluster_transport>);

// `list_segments` is the metadata endpoint's segment list
// (net::remote_metadata::segment_lister()).
using segment_lister =
    std::function<boost::asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>>()>;

namespace detail {
// The routing, the memcpy lane and the TCP lane every cluster transport has.
struct cluster_parts {
  router_options routing;
  memcpy_lane memcpy;
  tcp_lane tcp;
};
inline cluster_parts make_cluster_parts(boost::asio::any_io_executor ex, segment_lister list_segments,
                                        cluster_transport_options options) {
  router_options routing;
  routing.memory = options.shared_memory ? segment_memory::shareable : segment_memory::private_anonymous;
  routing.list_segments = std::move(list_segments);
  routing.lanes = std::move(options.lanes);
  auto registry = options.process_segments ? options.process_segments : std::make_shared<segment_registry>();
  tcp_lane_options tcp{options.data_listen, options.advertise_host, options.serve, options.tcp};
  return {std::move(routing), memcpy_lane(std::move(registry), {options.shared_memory}),
          tcp_lane(std::move(ex), std::move(tcp))};
}
}  // namespace detail

inline cluster_transport make_cluster_transport(boost::asio::any_io_executor ex, segment_lister list_segments,
                                                cluster_transport_options options = {}) {
  auto parts = detail::make_cluster_parts(std::move(ex), std::move(list_segments), std::move(options));
  return cluster_transport(std::move(parts.routing), std::move(parts.memcpy), std::move(parts.tcp));
}

}  // namespace corokv
