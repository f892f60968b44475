#pragma once
// A store that is one node of a cluster: metadata from a corokv-master over
// TCP, data by memcpy in-process, by shared memory on the same host and by
// TCP between hosts, and a data server that makes this node's segments
// reachable by the others.
//
//   corokv::cluster_options o;
//   o.master.host = "10.0.0.1";
//   o.master.port = 7400;
//   auto kv = corokv::make_cluster_store(io.get_executor(), o);
//   co_await kv.add_segment(1 << 30);   // contribute memory (optional)
//   co_await kv.batch_put(keys, values);
//
// With replicated masters, name the cluster in etcd instead of one master:
//
//   o.master_url = "etcd://10.0.0.5:2379/prod";

#include <corokv/ha/etcd_url.hpp>
#include <corokv/ha/leader_locator.hpp>
#include <corokv/net/remote_metadata.hpp>
#include <corokv/store.hpp>
#include <corokv/transport/cluster_transport.hpp>

#include <stdexcept>
#include <string>

namespace corokv {

using cluster_store = basic_store<net::remote_metadata, cluster_transport>;

struct cluster_options {
  net::remote_metadata_options master;
  // "etcd://HOST:PORT[,HOST:PORT...]/NAME": the master is whichever of the
  // cluster's replicated masters leads (master.host and master.port are
  // then not used). Empty: the one master at master.host:master.port.
  std::string master_url;
  cluster_transport_options transport;
  store_options store;
};

// The store is neither copied nor moved: it is built in place.
// The metadata endpoint the options name. Throws std::invalid_argument for
// a master_url that is not an etcd:// URL.
inline net::remote_metadata make_cluster_metadata(boost::asio::any_io_executor ex, const cluster_options& options) {
  net::remote_metadata_options master = options.master;
  if (!options.master_url.empty()) {
    auto where = ha::parse_cluster_url(options.master_url);
    if (!where) throw std::invalid_argument("corokv: not an etcd://HOST:PORT/NAME URL: " + options.master_url);
    master.locator = std::make_shared<ha::leader_locator>(ex, std::move(*where), master.connect_timeout);
  }
  return net::remote_metadata(ex, std::move(master));
}

inline cluster_store make_cluster_store(boost::asio::any_io_executor ex, cluster_options options) {
  net::remote_metadata metadata = make_cluster_metadata(ex, options);
  auto lister = metadata.segment_lister();
  return cluster_store(ex, std::move(metadata), make_cluster_transport(ex, std::move(lister), std::move(options.transport)),
                       std::move(options.store));
}

}  // namespace corokv
