#pragma once
// A lane is one way to move bytes to or from a replica: memcpy within this
// process or through a same-host peer's mapped memory, TCP to the owner's
// data server, RDMA verbs, a local disk. The transport (lane_router.hpp) is
// a router over an ordered set of lanes: for each replica it asks every
// lane how well it reaches the replica's segment, gives the replica to the
// best, and calls each lane once per batch, lanes in parallel. Adding a lane
// is writing a type that models `lane` and naming it in a router's list;
// nothing else changes.
//
// The contract, beyond what the concept spells:
// - rank(where) is cheap and thread-safe: the router asks it once per
//   distinct segment per batch, from any thread. A lane may do one-time
//   work the first time it sees a segment (map it, connect).
// - read/write complete only when nothing the lane started can still touch
//   the requests' buffers, also when cancelled. They write status[k] for
//   every request k: success, or why not (segment_not_found for a range the
//   lane cannot resolve, transfer_failed, size_mismatch, cancelled, ...).
//   Their error_code is a failure of the whole call (cancelled, a closed
//   device), after which the operation fails as a whole.
// - The requests of one call may name many segments and nodes; a lane
//   groups them as its medium likes (one exchange per node, one chain of
//   work requests per queue pair).
// - A request's `registration` is the lane's own memory::lane_registration for the
//   registered region its buffer lies in, or null (see registering_lane).
//
// Beyond moving bytes, a lane may have capabilities, each a concept below
// that the router looks for: synchronous, registering, publishing,
// directory-following, hosting (it runs this node's data server) and
// serving (it answers peers through that server). A lane with none of
// them, or all, is named in a router's list the same way.

#include <corokv/client/counters.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/local_segment.hpp>
#include <corokv/memory/registered_region.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <concepts>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

// Declared, not included: lanes that do not serve need not compile the server.
namespace corokv::net {
class data_server;
}  // namespace corokv::net

namespace corokv::transport {

// How well a lane reaches a segment: lower is better.
using lane_rank = std::uint8_t;

namespace ranks {
inline constexpr lane_rank this_process = 0;  // the segment is mapped in this process
inline constexpr lane_rank same_host = 10;    // through a mapping of a same-host peer's memory
inline constexpr lane_rank rdma = 20;         // one-sided verbs to the owner's registered memory
inline constexpr lane_rank disk = 25;         // a disk segment of this process: better than its own data server
inline constexpr lane_rank tcp = 30;          // the owner's data server (which reads disk segments itself)
inline constexpr lane_rank unreachable = 255;
}  // namespace ranks

// What a lane is told of the segment a replica lives in.
struct segment_route {
  segment_id id = 0;
  // From the metadata service's segment list; null while the segment is not
  // known there (always, for a store whose endpoint lists no segments).
  const segment_descriptor* descriptor = nullptr;
};

// One of this node's own segments, as it is published to the lanes.
struct published_segment {
  segment_id id = 0;
  std::shared_ptr<memory::local_segment> memory;
};

// The lane contract: a name, a rank per segment, and batched reads and
// writes of replica ranges.
template <class L>
concept lane = std::move_constructible<L> &&
               requires(L& l, const L& cl, const segment_route& where, std::span<const memory::read_request> reads,
                        std::span<const memory::write_request> writes, std::span<errc> status) {
                 { cl.name() } -> std::convertible_to<std::string_view>;
                 { l.rank(where) } -> std::same_as<lane_rank>;
                 { l.read(reads, status) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
                 { l.write(writes, status) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
               };

// A lane that moves bytes without waiting (memcpy): read_now and write_now
// do what read and write do, before returning. The router then completes a
// batch that only such lanes carry without suspending: no coroutine frame,
// no trip through the executor.
template <class L>
concept synchronous_lane = lane<L> && requires(L& l, std::span<const memory::read_request> reads,
                                               std::span<const memory::write_request> writes, std::span<errc> status) {
  { l.read_now(reads, status) } -> std::same_as<std::error_code>;
  { l.write_now(writes, status) } -> std::same_as<std::error_code>;
};

// A lane that must prepare caller memory before moving bytes through it (an
// RDMA lane registers it with its device). register_region is called once
// per region the store registers (the buffer pool's included), may leave
// `out` null, and refuses with an error code; what it leaves in `out` is
// destroyed when the region is unregistered and no operation uses it.
template <class L>
concept registering_lane =
    lane<L> && requires(L& l, memory::registered_region& region, std::unique_ptr<memory::lane_registration>& out) {
      { l.register_region(region, out) } -> std::same_as<std::error_code>;
    };

// A lane that makes this node's own segments reachable (a data server
// serves them, a device registers them) and says how in the endpoints the
// segment is announced with. withdraw returns once no transfer of the lane
// uses the segment any more.
template <class L>
concept publishing_lane =
    lane<L> && requires(L& l, const published_segment& segment, segment_endpoints& where, segment_id id) {
      { l.publish(segment, where) } -> std::same_as<std::error_code>;
      { l.withdraw(id) } -> std::same_as<void>;
    };

// A lane that keeps state per peer segment (a mapping, a connection) and
// hears when segments leave the metadata service's list.
template <class L>
concept directory_following_lane = lane<L> && requires(L& l, std::span<const segment_id> gone) {
  { l.forget(gone) } -> std::same_as<void>;
};

// A lane that runs this node's data server (the TCP lane): the server the
// serving lanes answer peers through. Null when it does not serve.
template <class L>
concept hosting_lane = lane<L> && requires(const L& cl) {
  { cl.data_server() } -> std::same_as<std::shared_ptr<net::data_server>>;
};

// A lane that also serves peers through this node's data server: it
// registers handlers for the message types it answers (the RDMA lane's
// queue-pair set-up) or range sources for segments the server does not
// hold in memory (the disk lane's disk segments), see net/data_server.hpp.
// The router calls serve once, when it is made, with the hosting lane's
// server, if it has one that serves. What the lane registers may outlive
// it, and must then answer harmlessly (hold the lane's state weakly).
template <class L>
concept serving_lane = lane<L> && requires(L& l, net::data_server& server) {
  { l.serve(server) } -> std::same_as<void>;
};

}  // namespace corokv::transport
