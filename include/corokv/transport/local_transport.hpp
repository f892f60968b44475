#pragma once
// The transport of an embedded store: a router with the memcpy lane alone.
// Its segments are private memory of this process; stores that share the
// lane's process registry (memcpy_lane(registry)) read each other's.

#include <corokv/transport/data_transport.hpp>
#include <corokv/transport/lane_router.hpp>
#include <corokv/transport/memcpy_lane.hpp>

namespace corokv::transport {

using local_transport = lane_router<memcpy_lane>;

static_assert(data_transport<local_transport>);
static_assert(synchronous_transport<local_transport>);

}  // namespace corokv::transport
