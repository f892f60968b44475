#pragma once
// The transport of a cluster node with an RDMA device: the cluster
// transport's lanes with the RDMA lane between them. Per replica: memcpy in
// this process or from a same-host peer's mapped memory, else RDMA where
// both ends have a device, else TCP. Needs libibverbs (corokv::rdma).
//
// The RDMA lane sets up its queue pairs over the peers' data servers, so
// this node's data server answers rdma_connect with the lane's acceptor.

#include <corokv/transport/cluster_transport.hpp>
#include <corokv/transport/data_transport.hpp>
#include <corokv/transport/lane_router.hpp>
#include <corokv/transport/rdma_lane.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <utility>

namespace corokv {

using rdma_cluster_transport = lane_router<memcpy_lane, rdma_lane, tcp_lane>;

static_assert(data_transport<rdma_cluster_transport>);

// Throws as the lanes do: boost::system::system_error for a bad listen or
// advertise address, or a device that is required and cannot be opened.
inline rdma_cluster_transport make_rdma_cluster_transport(boost::asio::any_io_executor ex, segment_lister list_segments,
                                                          cluster_transport_options options = {},
                                                          rdma_lane_options rdma = {}) {
  auto parts = detail::make_cluster_parts(ex, std::move(list_segments), std::move(options));
  rdma_lane verbs(std::move(ex), std::move(rdma));
  if (auto server = parts.tcp.data_server()) server->set_rdma_acceptor(verbs.acceptor());
  return rdma_cluster_transport(std::move(parts.routing), std::move(parts.memcpy), std::move(verbs),
                                std::move(parts.tcp));
}

}  // namespace corokv
