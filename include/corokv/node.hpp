#pragma once
// A store that is one node of a cluster: metadata from a corokv-master over
// TCP, data by memcpy in-process, by shared memory on the same host, by
// the Extra lanes named (RDMA, a disk, ...) and by TCP between hosts, and
// a data server that makes this node's segments reachable by the others.
// One type and one maker for every combination:
//
//   corokv::node_options o;
//   o.master.host = "10.0.0.1";
//   o.master.port = 7400;
//   auto kv = corokv::make_node_store(io.get_executor(), o);              // memcpy + TCP
//   auto kv = corokv::make_node_store<corokv::rdma_lane>(ex, o, rdma);    // + RDMA (corokv/rdma.hpp)
//   auto kv = corokv::make_node_store<corokv::disk_lane>(ex, o);          // + a disk (corokv/disk_tier.hpp)
//   auto kv = corokv::make_node_store<corokv::rdma_lane, corokv::disk_lane>(ex, o, rdma, disk);
//
// Each extra lane is made from its own options, given after the node's in
// the order the lanes are named (all of them, or none for defaults). A lane
// of your own joins the same way: write a type that models `lane` (and
// serving_lane if it answers peers through the data server), and name it.
//
// With replicated masters, name the cluster in etcd instead of one master:
//
//   o.master_url = "etcd://10.0.0.5:2379/prod";

#include <corokv/ha/etcd_url.hpp>
#include <corokv/ha/leader_locator.hpp>
#include <corokv/net/remote_metadata.hpp>
#include <corokv/store.hpp>
#include <corokv/transport/node_transport.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace corokv {

// The node's parts under the names programs call (their own namespaces are
// those of their folders).
using transport::lane_router;
using memory::segment_registry;
using transport::make_node_transport;
using transport::memcpy_lane;
using transport::memcpy_lane_options;
using transport::memcpy_lane_stats;
using transport::node_transport;
using transport::node_transport_options;
using transport::router_options;
using transport::segment_lister;
using transport::tcp_lane;
using transport::tcp_lane_options;
using transport::tcp_lane_stats;

template <lane... Extra>
using node_store = basic_store<net::remote_metadata, node_transport<Extra...>>;

struct node_options {
  net::remote_metadata_options master;
  // "etcd://HOST:PORT[,HOST:PORT...]/NAME": the master is whichever of the
  // cluster's replicated masters leads (master.host and master.port are
  // then not used). Empty: the one master at master.host:master.port.
  std::string master_url;
  node_transport_options transport;
  store_options store;
};

// The metadata endpoint the options name. Throws std::invalid_argument for
// a master_url that is not an etcd:// URL.
inline net::remote_metadata make_node_metadata(boost::asio::any_io_executor ex, const node_options& options) {
  net::remote_metadata_options master = options.master;
  if (!options.master_url.empty()) {
    auto where = ha::parse_cluster_url(options.master_url);
    if (!where) throw std::invalid_argument("corokv: not an etcd://HOST:PORT/NAME URL: " + options.master_url);
    master.locator = std::make_shared<ha::leader_locator>(ex, std::move(*where), master.connect_timeout);
  }
  return net::remote_metadata(ex, std::move(master));
}

// The store is neither copied nor moved: it is built in place. Throws as
// make_node_metadata and make_node_transport do.
template <lane... Extra, class... ExtraOptions>
  requires(sizeof...(ExtraOptions) == 0 || sizeof...(ExtraOptions) == sizeof...(Extra))
node_store<Extra...> make_node_store(boost::asio::any_io_executor ex, node_options options,
                                     ExtraOptions&&... extra) {
  net::remote_metadata metadata = make_node_metadata(ex, options);
  auto lister = metadata.segment_lister();
  return node_store<Extra...>(
      ex, std::move(metadata),
      make_node_transport<Extra...>(ex, std::move(lister), std::move(options.transport),
                                    std::forward<ExtraOptions>(extra)...),
      std::move(options.store));
}

}  // namespace corokv
