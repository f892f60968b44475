#pragma once
// What a store needs from the metadata service it talks to. The embedded
// endpoint (a meta::service in this process), the remote one (a
// corokv-master over TCP) and the tests' doubles model it, and basic_store
// is constrained by it.
//
// The contract, beyond what the concept spells (each call is one metadata
// round trip, which the store counts):
// - Batch calls take keys and an output span of the same length; index i
//   answers key i with the service's per-key status (meta/service.hpp). The
//   error_code is a failure of the whole call: invalid_argument, or the
//   network's rpc_failed (sent, outcome unknown), timeout, protocol_error.
//   When it is set, the outputs are not to be read.
// - register_node registers `node` as a writer whose death revokes its
//   pending puts; mount adds a segment, under `requested` if not 0 (an id
//   already in use answers already_exists), and registers the node too.
// - query grants or extends a lease of `ttl` on every found key; exist and
//   exist_prefix grant none.
// - validate checks reads that finished after their lease: per key, success
//   only if the key still names the version read and that object still
//   lists the replica it was read from (epoch included), so the bytes read
//   cannot have been overwritten; it grants no lease.
// - remove_all hides every committed object (leased memory is freed when
//   its lease ends) and answers how many it hid.
// - leave(node) is for a destructor: synchronous and noexcept, best effort
//   (the node's segments are unmounted and its puts revoked, now or when
//   the service declares it dead).
// - All members are safe to call concurrently from any thread, and their
//   awaitables may be awaited on any executor.

#include <corokv/error.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <concepts>
#include <cstdint>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::client {

template <class M>
concept metadata_endpoint =
    std::move_constructible<M> &&
    requires(M& m, node_id node, std::uint64_t size, segment_endpoints where, segment_id id, key_span keys,
             std::span<const std::uint64_t> sizes, put_options opts, std::span<put_start_result> reservations,
             std::span<const version_t> versions, std::span<const replica_descriptor> read_from,
             std::span<errc> statuses, duration ttl, std::span<query_result> results) {
      { m.register_node(node) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.mount(node, size, where, id) } -> std::same_as<boost::asio::awaitable<std::pair<std::error_code, segment_id>>>;
      { m.put_start(keys, sizes, opts, node, reservations) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.put_end(keys, versions, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.put_revoke(keys, versions, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.query(keys, ttl, results) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.exist(keys, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.exist_prefix(keys) } -> std::same_as<boost::asio::awaitable<std::pair<std::error_code, prefix_result>>>;
      { m.remove(keys, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.remove_all() } -> std::same_as<boost::asio::awaitable<std::pair<std::error_code, std::uint64_t>>>;
      { m.validate(keys, versions, read_from, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.leave(node) } noexcept -> std::same_as<void>;
    };

// An endpoint that also serves the disk tier (see meta::service's
// demote_start, demote_end and adopt_disk_copies): disk segments are
// mounted with their tier (and `remount` for a restarted node's file); a
// node asks for objects to copy from its memory to its disk, reports per
// key whether each copy is there (`copied`: success, or why not), after a
// restart offers the copies its disk still holds, and unmounts a disk whose
// tier could not start.
template <class M>
concept tiering_endpoint =
    metadata_endpoint<M> &&
    requires(M& m, node_id node, std::uint64_t size, segment_endpoints where, segment_id id, storage_tier tier,
             std::size_t count, key_span keys, std::span<const version_t> versions, std::span<const errc> copied,
             std::span<errc> statuses, bool remount, std::span<const disk_copy> found) {
      { m.mount(node, size, where, id, tier, remount) } -> std::same_as<boost::asio::awaitable<std::pair<std::error_code, segment_id>>>;
      { m.demote_start(node, count, size, size, size) } -> std::same_as<boost::asio::awaitable<std::pair<std::error_code, demotion_work>>>;
      { m.demote_end(keys, versions, copied, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.adopt_disk_copies(node, found, statuses) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
      { m.unmount(id) } -> std::same_as<boost::asio::awaitable<std::error_code>>;
    };

}  // namespace corokv::client
