#pragma once
// The cluster store: node_store<> (node.hpp), memcpy and TCP. The names
// below are what programs called before there was one node type; each is
// a one-line alias of node.hpp's and stays.
//
//   corokv::cluster_options o;
//   o.master.host = "10.0.0.1";
//   o.master.port = 7400;
//   auto kv = corokv::make_cluster_store(io.get_executor(), o);
//   co_await kv.add_segment(1 << 30);   // contribute memory (optional)
//   co_await kv.batch_put(keys, values);

#include <corokv/node.hpp>
#include <corokv/transport/node_transport.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <utility>

namespace corokv {

// Aliases of node.hpp and transport/node_transport.hpp, one line each.
using cluster_store = node_store<>;
using cluster_options = node_options;
using cluster_transport = node_transport<>;
using cluster_transport_options = node_transport_options;
inline net::remote_metadata make_cluster_metadata(boost::asio::any_io_executor ex, const cluster_options& o) { return make_node_metadata(std::move(ex), o); }
inline cluster_store make_cluster_store(boost::asio::any_io_executor ex, cluster_options o) { return make_node_store<>(std::move(ex), std::move(o)); }
inline cluster_transport make_cluster_transport(boost::asio::any_io_executor ex, segment_lister list, cluster_transport_options o = {}) { return make_node_transport<>(std::move(ex), std::move(list), std::move(o)); }

}  // namespace corokv
