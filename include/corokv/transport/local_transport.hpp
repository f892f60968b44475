#pragma once
// Moves bytes by memcpy between callers' buffers and segments mapped in this
// process. Synchronous underneath: its awaitables complete without
// suspending, and a whole batch runs under one shared registry lock.

#include <corokv/error.hpp>
#include <corokv/transport/segment_registry.hpp>
#include <corokv/transport/transfer.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstring>
#include <memory>
#include <span>
#include <system_error>

namespace corokv {

class local_transport {
 public:
  explicit local_transport(std::shared_ptr<segment_registry> registry = std::make_shared<segment_registry>())
      : registry_(std::move(registry)) {}

  segment_registry& registry() const noexcept { return *registry_; }
  const std::shared_ptr<segment_registry>& shared_registry() const noexcept { return registry_; }

  bool reaches(const replica_descriptor& r) const { return registry_->contains(r.segment); }

  // Per request: success, or segment_not_found when the segment is gone or
  // the range falls outside it (nothing is copied then).
  boost::asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    registry_->with_segments([&](auto resolve) {
      for (std::size_t k = 0; k < requests.size(); ++k) {
        const std::span<std::byte> bytes = resolve(requests[k].replica);
        const bool fits = requests[k].destination.size() >= requests[k].replica.length;
        if (bytes.size() != requests[k].replica.length || !fits) {
          status[k] = errc::segment_not_found;
          continue;
        }
        std::memcpy(requests[k].destination.data(), bytes.data(), bytes.size());
        status[k] = errc::success;
      }
    });
    co_return std::error_code{};
  }

  boost::asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    registry_->with_segments([&](auto resolve) {
      for (std::size_t k = 0; k < requests.size(); ++k) {
        const std::span<std::byte> bytes = resolve(requests[k].replica);
        if (bytes.size() != requests[k].replica.length || requests[k].source.size() != bytes.size()) {
          status[k] = errc::segment_not_found;
          continue;
        }
        std::memcpy(bytes.data(), requests[k].source.data(), bytes.size());
        status[k] = errc::success;
      }
    });
    co_return std::error_code{};
  }

 private:
  std::shared_ptr<segment_registry> registry_;
};

}  // namespace corokv
