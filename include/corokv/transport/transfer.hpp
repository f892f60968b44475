#pragma once
// The unit of work every transport moves: one replica's bytes from or into
// a caller's buffer. A batch is a span of these; status comes back per
// request.

#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>

namespace corokv {

struct read_request {
  replica_descriptor replica;
  boost::asio::mutable_buffer destination;  // at least replica.length bytes
};

struct write_request {
  replica_descriptor replica;
  boost::asio::const_buffer source;  // exactly replica.length bytes
};

}  // namespace corokv
