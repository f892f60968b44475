#pragma once
// A cluster node that moves bytes to and from other hosts by RDMA verbs
// where both ends have a device: cluster.hpp's store with the RDMA lane
// (transport/rdma_lane.hpp). Link corokv::rdma (libibverbs).
//
//   corokv::rdma_cluster_options o;
//   o.master.host = "10.0.0.1";
//   o.rdma.device = "mlx5_0";          // empty: the first with an active port
//   auto kv = corokv::make_rdma_cluster_store(io.get_executor(), o);
//
// Without a usable device the RDMA lane stays idle and the node works as a
// cluster_store does (o.rdma.required makes that an error instead).

#include <corokv/cluster.hpp>
#include <corokv/net/remote_metadata.hpp>
#include <corokv/store.hpp>
#include <corokv/transport/rdma_cluster_transport.hpp>

namespace corokv {

using rdma_cluster_store = basic_store<net::remote_metadata, rdma_cluster_transport>;

struct rdma_cluster_options : cluster_options {
  rdma_lane_options rdma;
};

// The store is neither copied nor moved: it is built in place.
inline rdma_cluster_store make_rdma_cluster_store(boost::asio::any_io_executor ex, rdma_cluster_options options) {
  net::remote_metadata metadata = make_cluster_metadata(ex, options);
  auto lister = metadata.segment_lister();
  return rdma_cluster_store(
      ex, std::move(metadata),
      make_rdma_cluster_transport(ex, std::move(lister), std::move(options.transport), std::move(options.rdma)),
      std::move(options.store));
}

}  // namespace corokv
