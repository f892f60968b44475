#pragma once
// The embedded store: the metadata service, the segments and the data all in
// this process; bytes move by memcpy.
//
//   asio::io_context io;
//   corokv::store kv(io.get_executor());
//   co_await kv.add_segment(1 << 30);
//   co_await kv.batch_put(keys, values);

#include <corokv/client/embedded_metadata.hpp>
#include <corokv/store.hpp>
#include <corokv/transport/local_transport.hpp>

namespace corokv {

// The embedded store's parts under the names programs call (their own
// namespaces are those of their folders).
using client::embedded_metadata;
using transport::lane_router;
using transport::local_transport;
using transport::memcpy_lane;
using transport::memcpy_lane_options;
using transport::memcpy_lane_stats;
using transport::router_options;

using store = basic_store<embedded_metadata, local_transport>;

}  // namespace corokv
