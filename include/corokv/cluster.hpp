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

#include <corokv/net/remote_metadata.hpp>
#include <corokv/store.hpp>
#include <corokv/transport/cluster_transport.hpp>

namespace corokv {

using cluster_store = basic_store<net::remote_metadata, cluster_transport>;

struct cluster_options {
  net::remote_metadata_options master;
  cluster_transport_options transport;
  store_options store;
};

// The store is neither copied nor moved: it is built in place.
inline cluster_store make_cluster_store(boost::asio::any_io_executor ex, cluster_options options) {
  net::remote_metadata metadata(ex, std::move(options.master));
  auto lister = metadata.segment_lister();
  return cluster_store(ex, std::move(metadata), make_cluster_transport(ex, std::move(lister), std::move(options.transport)),
                       std::move(options.store));
}

}  // namespace corokv
