#pragma once
// Query results as the metadata service gives them, for the tests of the
// client's sans-I/O parts (read plan, metadata cache).

#include <corokv/types.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace corokv::test {

// A fixed "now" well past the clock's epoch.
inline const time_point t0 = time_point{} + std::chrono::hours(1);

// A successful answer: `replicas` replicas of `size` bytes at `version`,
// leased until `deadline`.
inline query_result leased(std::uint64_t size, version_t version, time_point deadline, std::size_t replicas = 1) {
  query_result q;
  q.status = errc::success;
  q.size = size;
  q.version = version;
  q.lease_deadline = deadline;
  for (std::size_t r = 0; r < replicas; ++r) q.replicas.push_back({100 + r, 7, 4096 * version, size, version + r});
  return q;
}

}  // namespace corokv::test
