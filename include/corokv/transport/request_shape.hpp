#pragma once
// The rules every lane's requests follow, whatever the lane: a read's
// destination holds at least the replica's length (else buffer_too_small),
// a write's source is exactly the replica's length (else size_mismatch).
// The router (lane_router.hpp) checks them before it gives a lane anything,
// so a lane it calls sees only well-formed requests; a lane called
// directly (a test, the data server's range source) checks them with the
// same function. What only a lane knows (its segment's bounds, O_DIRECT's
// alignment, a zero length RDMA cannot move) stays in the lane.

#include <corokv/error.hpp>
#include <corokv/memory/transfer.hpp>

#include <cstddef>
#include <span>

namespace corokv::transport {

inline errc request_shape(const memory::read_request& r) noexcept {
  return r.destination.size() < r.replica.length ? errc::buffer_too_small : errc::success;
}
inline errc request_shape(const memory::write_request& r) noexcept {
  return r.source.size() != r.replica.length ? errc::size_mismatch : errc::success;
}

// status[k] set for each request k of the wrong shape (the others are left
// as they are); whether every request has the right one.
template <class Request>
bool check_request_shapes(std::span<const Request> requests, std::span<errc> status) noexcept {
  bool all = true;
  for (std::size_t k = 0; k < requests.size(); ++k)
    if (const errc e = request_shape(requests[k]); e != errc::success) {
      status[k] = e;
      all = false;
    }
  return all;
}

}  // namespace corokv::transport
