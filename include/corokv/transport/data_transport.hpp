#pragma once
// What a store needs from the part that moves its bytes. Every transport in
// the project models it (the lane router, and the test doubles), and
// basic_store is constrained by it.
//
// The contract, beyond what the concept spells:
// - add_segment(id, size, populate) makes `size` bytes of memory reachable
//   under segment `id` by every way the transport offers (this process,
//   same-host peers, the network), before the id is announced to the
//   metadata service, and returns how peers reach it. remove_segment(id)
//   returns once no transfer uses the segment any more; the memory goes
//   when the last user lets go.
// - register_buffer(region) registers caller memory with everything that
//   must prepare it (an RDMA device); invalid_argument for an empty region
//   or one overlapping a registered region. unregister_buffer(region)
//   (exactly as registered) takes effect for new operations at once, while
//   operations already using the region keep it until they complete.
// - read/write move a batch of replica ranges; status[k] answers request k
//   (success, segment_not_found for a replica the transport cannot reach,
//   transfer_failed, ...). The error_code is a failure of the whole call.
//   Both complete only when nothing can still touch the requests' buffers,
//   also when cancelled through the awaiting coroutine's cancellation slot.
// - All members are safe to call concurrently from any thread.
// - counters_by_lane() reports, per way of moving bytes, what it moved.

#include <corokv/error.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::transport {

template <class T>
concept data_transport =
    std::move_constructible<T> &&
    requires(T& t, const T& ct, segment_id id, std::uint64_t size, bool populate, boost::asio::mutable_buffer region,
             std::span<const memory::read_request> reads, std::span<const memory::write_request> writes, std::span<errc> status) {
      { t.add_segment(id, size, populate) } -> std::same_as<std::pair<std::error_code, segment_endpoints>>;
      { t.remove_segment(id) } -> std::same_as<void>;
      { t.register_buffer(region) } -> std::same_as<std::error_code>;
      { t.unregister_buffer(region) } -> std::same_as<std::error_code>;
      { ct.registered_buffers() } -> std::same_as<std::size_t>;
      { t.read(reads, status) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { t.write(writes, status) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { ct.counters_by_lane() } -> std::same_as<std::vector<client::lane_counters>>;
    };

// A transport that can sometimes finish a batch before returning (all of
// it in this process's memory): try_read_now / try_write_now either do the
// whole batch, as read/write would, and return its outcome, or do nothing
// and return nullopt, and the store awaits read/write instead.
template <class T>
concept synchronous_transport =
    data_transport<T> && requires(T& t, std::span<const memory::read_request> reads, std::span<const memory::write_request> writes,
                                  std::span<errc> status) {
      { t.try_read_now(reads, status) } -> std::same_as<std::optional<std::error_code>>;
      { t.try_write_now(writes, status) } -> std::same_as<std::optional<std::error_code>>;
    };

}  // namespace corokv::transport
