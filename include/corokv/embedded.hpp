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

using store = basic_store<embedded_metadata, local_transport>;

}  // namespace corokv
