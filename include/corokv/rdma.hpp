#pragma once
// A cluster node that moves bytes to and from other hosts by RDMA verbs
// where both ends have a device: node.hpp's store with the RDMA lane
// (transport/rdma_lane.hpp). Link corokv::rdma (libibverbs).
//
//   corokv::node_options o;
//   o.master.host = "10.0.0.1";
//   corokv::rdma_lane_options rdma;
//   rdma.device = "mlx5_0";          // empty: the first with an active port
//   auto kv = corokv::make_node_store<corokv::rdma_lane>(io.get_executor(), o, rdma);
//
// Without a usable device the RDMA lane stays idle and the node works as a
// cluster_store does (rdma.required makes that an error instead). With a
// disk tier as well (corokv/disk_tier.hpp), it is one line too:
//
//   auto kv = corokv::make_node_store<corokv::rdma_lane, corokv::disk_lane>(ex, o, rdma, disk);

#include <corokv/cluster.hpp>
#include <corokv/node.hpp>
#include <corokv/transport/node_transport.hpp>
#include <corokv/transport/rdma_lane.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <utility>

namespace corokv {

using transport::rdma_lane;
using transport::rdma_lane_options;
using transport::rdma_lane_stats;

// The names programs called before there was one node type: each a
// one-line alias of node.hpp's (rdma_cluster_options keeps the RDMA lane's
// options beside the node's, as it did).
using rdma_cluster_transport = node_transport<rdma_lane>;
using rdma_cluster_store = node_store<rdma_lane>;
struct rdma_cluster_options : node_options { rdma_lane_options rdma; };
inline rdma_cluster_store make_rdma_cluster_store(boost::asio::any_io_executor ex, rdma_cluster_options o) { return make_node_store<rdma_lane>(std::move(ex), o, o.rdma); }
inline rdma_cluster_transport make_rdma_cluster_transport(boost::asio::any_io_executor ex, segment_lister list, node_transport_options o = {}, rdma_lane_options rdma = {}) { return make_node_transport<rdma_lane>(std::move(ex), std::move(list), std::move(o), std::move(rdma)); }

}  // namespace corokv
