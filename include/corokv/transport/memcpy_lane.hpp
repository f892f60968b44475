#pragma once
// The memcpy lane: replicas this process can address.
//   - a segment of a store in this process (rank this_process): the
//     process registry, shared by the stores that should reach each
//     other's memory this way;
//   - a same-host peer's shareable segment (rank same_host): mapped here
//     the first time a batch names it, after checking it is the memfd it
//     claims to be (memory::peer_mapping), and unmapped when it leaves the metadata
//     service's list.
// Synchronous underneath: its awaitables complete without suspending, and a
// batch copies under one shared lock per registry, so a segment cannot be
// unmapped in the middle of a copy.

#include <corokv/detail/identity.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/peer_mapping.hpp>
#include <corokv/memory/segment_registry.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/request_shape.hpp>

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>

namespace corokv::transport {

struct memcpy_lane_options {
  // Map same-host peers' shareable segments and copy through the mapping.
  bool map_same_host = true;
};

struct memcpy_lane_stats {
  std::uint64_t bytes_this_process = 0;
  std::uint64_t bytes_same_host = 0;
  std::uint64_t mappings = 0;  // peers' segments mapped so far
};

class memcpy_lane {
 public:
  explicit memcpy_lane(std::shared_ptr<memory::segment_registry> process_segments = std::make_shared<memory::segment_registry>(),
                       memcpy_lane_options options = {})
      : state_(std::make_shared<state>(std::move(process_segments), options)) {}

  std::string_view name() const noexcept { return "memcpy"; }

  // This process's segments: share it between stores that should read each
  // other's memory by memcpy.
  memory::segment_registry& registry() const noexcept { return *state_->process; }
  const std::shared_ptr<memory::segment_registry>& shared_registry() const noexcept { return state_->process; }
  memcpy_lane_stats stats() const noexcept {
    return {state_->bytes_this_process.load(std::memory_order_relaxed),
            state_->bytes_same_host.load(std::memory_order_relaxed),
            state_->mappings.load(std::memory_order_relaxed)};
  }

  lane_rank rank(const segment_route& where) {
    state& s = *state_;
    if (s.process->contains(where.id)) return ranks::this_process;
    if (s.mapped.contains(where.id)) return ranks::same_host;
    if (!s.options.map_same_host || !where.descriptor) return ranks::unreachable;
    const segment_descriptor& d = *where.descriptor;
    if (d.endpoints.host_id != s.host || d.endpoints.shm_name.empty()) return ranks::unreachable;
    {
      // Once per segment: mapping opens and checks a file. A batch racing
      // the first mapping goes by another lane meanwhile.
      std::lock_guard lock(s.mu);
      if (!s.tried.insert(where.id).second) return ranks::unreachable;
    }
    auto mapping = memory::peer_mapping::open(d);
    if (!mapping) return ranks::unreachable;
    s.mapped.add(where.id, mapping->data(), mapping->size(), mapping);
    s.mappings.fetch_add(1, std::memory_order_relaxed);
    return ranks::same_host;
  }

  // Per request: success, or segment_not_found when the segment is not
  // here or the range falls outside it (nothing is copied then).
  std::error_code read_now(std::span<const memory::read_request> requests, std::span<errc> status) {
    copy(requests, status);
    return {};
  }
  std::error_code write_now(std::span<const memory::write_request> requests, std::span<errc> status) {
    copy(requests, status);
    return {};
  }
  boost::asio::awaitable<std::error_code> read(std::span<const memory::read_request> requests, std::span<errc> status) {
    co_return read_now(requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const memory::write_request> requests, std::span<errc> status) {
    co_return write_now(requests, status);
  }

  std::error_code publish(const published_segment& segment, segment_endpoints&) {
    state_->process->add(segment.id, segment.memory->data(), segment.memory->size(), segment.memory);
    return {};
  }
  void withdraw(segment_id id) { state_->process->remove(id); }

  void forget(std::span<const segment_id> gone) {
    state& s = *state_;
    for (segment_id id : gone) {
      s.mapped.remove(id);
      std::lock_guard lock(s.mu);
      s.tried.erase(id);
    }
  }

 private:
  struct state {
    state(std::shared_ptr<memory::segment_registry> p, memcpy_lane_options o)
        : process(std::move(p)), options(o), host(detail::host_id()) {}
    std::shared_ptr<memory::segment_registry> process;
    memory::segment_registry mapped;  // same-host peers' segments, owned by their memory::peer_mapping
    memcpy_lane_options options;
    std::string host;
    std::mutex mu;
    std::unordered_set<segment_id> tried;  // mapping attempted (a failed one is not retried)
    std::atomic<std::uint64_t> bytes_this_process{0}, bytes_same_host{0}, mappings{0};
  };

  // `bytes` is the replica's range (resolved, so of its length). The shape
  // is checked again for a caller other than the router (request_shape.hpp).
  static errc copy_one(const memory::read_request& r, std::span<std::byte> bytes) {
    if (const errc e = request_shape(r); e != errc::success) return e;
    std::memcpy(r.destination.data(), bytes.data(), bytes.size());
    return errc::success;
  }
  static errc copy_one(const memory::write_request& r, std::span<std::byte> bytes) {
    if (const errc e = request_shape(r); e != errc::success) return e;
    std::memcpy(bytes.data(), r.source.data(), bytes.size());
    return errc::success;
  }

  // Every request under the shared locks of both registries: a replica is
  // found in this process's segments or in a peer's mapping, and a batch's
  // neighbours, which mostly share a segment, are looked up once.
  template <class Request>
  void copy(std::span<const Request> requests, std::span<errc> status) {
    state& s = *state_;
    std::uint64_t here = 0, peers = 0;
    s.process->with_segments([&](auto& own) {
      s.mapped.with_segments([&](auto& peer) {
        segment_id last = 0;
        bool have_last = false, last_is_own = true;
        for (std::size_t k = 0; k < requests.size(); ++k) {
          const replica_descriptor& r = requests[k].replica;
          std::span<std::byte> bytes;
          if (have_last && r.segment == last) {
            bytes = last_is_own ? own(r) : peer(r);
          } else {
            bytes = own(r);
            last_is_own = !bytes.empty();
            if (!last_is_own) bytes = peer(r);
            last = r.segment;
            have_last = true;
          }
          if (bytes.empty()) {
            status[k] = errc::segment_not_found;
            continue;
          }
          status[k] = copy_one(requests[k], bytes);
          if (status[k] == errc::success) (last_is_own ? here : peers) += bytes.size();
        }
      });
    });
    if (here) s.bytes_this_process.fetch_add(here, std::memory_order_relaxed);
    if (peers) s.bytes_same_host.fetch_add(peers, std::memory_order_relaxed);
  }

  std::shared_ptr<state> state_;
};

static_assert(lane<memcpy_lane>);
static_assert(synchronous_lane<memcpy_lane>);
static_assert(publishing_lane<memcpy_lane>);
static_assert(directory_following_lane<memcpy_lane>);

}  // namespace corokv::transport
