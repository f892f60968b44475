#pragma once
// The unit of work every transport and lane moves: one replica's bytes from
// or into a caller's buffer. A batch is a span of these; status comes back
// per request.
//
// `registration` is what the lane carrying the request keeps for the
// registered region the buffer lies in (an RDMA lane's memory region), or
// null if the buffer lies in no registered region. Callers leave it null:
// the router fills it per lane, and holds the region for the call.

#include <corokv/memory/registered_region.hpp>
#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>

namespace corokv::memory {

struct read_request {
  replica_descriptor replica;
  boost::asio::mutable_buffer destination;  // at least replica.length bytes
  const lane_registration* registration = nullptr;
};

struct write_request {
  replica_descriptor replica;
  boost::asio::const_buffer source;  // exactly replica.length bytes
  const lane_registration* registration = nullptr;
};

}  // namespace corokv::memory
