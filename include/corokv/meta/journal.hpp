#pragma once
// What a replicated master sends its followers: every change of the
// service's durable state as a record, in the order the service made it.
// Effects, not requests: a follower never re-runs an allocation or an
// eviction (its leases and LRU differ from the leader's); it applies what the
// leader decided.
//
// The service writes a record while it still holds the lock that orders the
// change (the key's shard for an object, every shard for a dropped segment,
// the pool for a mount), so records about one key, or one extent, reach the
// journal in the order they happened. Queries are not recorded: leases are
// the leader's alone (a new leader holds every object's memory for
// max_lease_ttl instead, see replica_state).

#include <corokv/types.hpp>

#include <cstdint>
#include <span>
#include <string_view>

namespace corokv::meta {

enum class journal_kind : std::uint8_t {
  node_registered = 1,  // node, expires
  node_left,            // node (its segments follow as segments_dropped)
  segment_mounted,      // segment, held (a remount: nothing is allocated in it for max_lease_ttl)
  segments_dropped,     // segments, node (whose pending puts are revoked; 0: none)
  object_reserved,      // key, size, version, replicas, node (the writer)
  object_committed,     // key, version
  object_released,      // key, version: gone and its memory free
  object_removed,       // key, version: gone, memory held until its lease ends
  removed_reclaimed,    // version: the held memory of a removed object is free
  object_replicas_changed,  // key, version, replicas: the object's replicas are now these (a disk copy
                            // committed, or memory copies released); ranges no longer named are free
};
inline constexpr std::uint8_t last_journal_kind = static_cast<std::uint8_t>(journal_kind::object_replicas_changed);

// One change. Only the fields its kind names are meaningful; views point
// into the service's state and live only during journal::record().
struct journal_record {
  journal_kind kind = journal_kind::node_registered;
  node_id node = 0;
  bool expires = true;
  bool held = false;
  segment_descriptor segment;
  std::span<const segment_id> segments;
  std::string_view key;
  std::uint64_t size = 0;
  version_t version = no_version;
  replica_list replicas;
};

// Where the service writes its records. Called with service locks held: an
// implementation must not call back into the service, and should be quick.
class journal {
 public:
  virtual ~journal() = default;
  virtual void record(const journal_record& r) = 0;
};

}  // namespace corokv::meta
