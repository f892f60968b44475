#pragma once
// The transport of a store in a cluster: node_transport<Extra...>, the lane
// router with the memcpy lane (this process, and same-host peers through
// their mapped memfds), the Extra lanes (RDMA verbs, a disk, a lane of your
// own), and the TCP lane (every other node's data server, and this node's
// own). Per replica the best of them that reaches it; where a segment lives
// comes from the metadata service's segment list, fetched when a batch
// names a segment not seen before (so the first batch touching a new node
// costs one extra metadata round trip, and later ones none).
//
// Lanes that also serve peers (serving_lane: the RDMA lane's queue-pair
// set-up, the disk lane's range source) are connected to the TCP lane's
// data server by the router (lane_router.hpp); nothing here names them.
//
//   node_transport<>                      memcpy + TCP (the cluster store's)
//   node_transport<rdma_lane>             memcpy + RDMA + TCP
//   node_transport<disk_lane>             memcpy + disk + TCP
//   node_transport<rdma_lane, disk_lane>  memcpy + RDMA + disk + TCP

#include <corokv/net/data_client.hpp>
#include <corokv/transport/data_transport.hpp>
#include <corokv/transport/lane_router.hpp>
#include <corokv/transport/memcpy_lane.hpp>
#include <corokv/transport/tcp_lane.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace corokv::transport {

struct node_transport_options {
  // Where this node's data server listens, and the address peers use for it.
  boost::asio::ip::tcp::endpoint data_listen{boost::asio::ip::address_v4::loopback(), 0};
  std::string advertise_host = "127.0.0.1";  // an address, or a name looked up once, at construction
  bool serve = true;              // run a data server for this node's segments
  bool shared_memory = true;      // shareable segments; map same-host peers' segments
  net::data_client_options tcp;
  // This process's segment registry: stores that share one read each
  // other's segments by memcpy. Null: a registry of this store's own.
  std::shared_ptr<memory::segment_registry> process_segments;
  // Only these lanes carry transfers ("memcpy", "tcp", "rdma", "disk"); empty: all.
  std::vector<std::string> lanes;
};

template <lane... Extra>
using node_transport = lane_router<memcpy_lane, Extra..., tcp_lane>;

static_assert(data_transport<node_transport<>>);
static_assert(synchronous_transport<node_transport<>>);

// `list_segments` is the metadata endpoint's segment list
// (net::remote_metadata::segment_lister()).
using segment_lister =
    std::function<boost::asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>>()>;

// Each Extra lane is made as Extra(ex, its options), or Extra(ex) when no
// options are given (in an unspecified order: they are a constructor's
// arguments). Throws as the lanes do: boost::system::
// system_error for a bad listen or advertise address (the TCP lane, made
// first) or an RDMA device that is required and cannot be opened.
template <lane... Extra, class... ExtraOptions>
  requires(sizeof...(ExtraOptions) == 0 || sizeof...(ExtraOptions) == sizeof...(Extra))
node_transport<Extra...> make_node_transport(boost::asio::any_io_executor ex, segment_lister list_segments,
                                             node_transport_options options = {}, ExtraOptions&&... extra) {
  router_options routing;
  routing.memory = options.shared_memory ? memory::segment_memory::shareable : memory::segment_memory::private_anonymous;
  routing.list_segments = std::move(list_segments);
  routing.lanes = std::move(options.lanes);
  auto registry = options.process_segments ? options.process_segments : std::make_shared<memory::segment_registry>();
  tcp_lane tcp(ex, {options.data_listen, options.advertise_host, options.serve, options.tcp});
  memcpy_lane memcpy(std::move(registry), {options.shared_memory});
  if constexpr (sizeof...(ExtraOptions) == 0)
    return node_transport<Extra...>(std::move(routing), std::move(memcpy), Extra(ex)..., std::move(tcp));
  else
    return node_transport<Extra...>(std::move(routing), std::move(memcpy),
                                    Extra(ex, std::forward<ExtraOptions>(extra))..., std::move(tcp));
}

}  // namespace corokv::transport
