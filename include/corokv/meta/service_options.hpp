#pragma once
// The metadata service's options, the answers of its calls that are not
// per key, and its counters.

#include <corokv/meta/clock.hpp>
#include <corokv/meta/segment_pool.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace corokv::meta {

struct service_options {
  std::size_t shards = 16;
  duration lease_ttl = std::chrono::seconds(5);       // granted by query(); at most max_lease_ttl
  // The longest lease a query may ask for (a longer one fails the call with
  // invalid_argument), and how long a remounted segment is held back from
  // allocation: no lease granted before the remount can outlive the hold.
  duration max_lease_ttl = std::chrono::seconds(30);
  duration put_timeout = std::chrono::seconds(30);    // a pending put older than this is revoked
  duration node_ttl = std::chrono::seconds(10);       // a node silent this long is dead
  double high_watermark = 0.95;                       // usage above this fraction triggers eviction...
  double low_watermark = 0.85;                        // ...down to this fraction
  // The disk tier: while memory use is above demote_watermark, nodes with
  // disk segments are handed their oldest objects to copy to disk
  // (demote_start), so that eviction releases memory without dropping
  // them. Disk eviction (which drops objects) runs above
  // disk_high_watermark, down to disk_low_watermark.
  double demote_watermark = 0.75;
  double disk_high_watermark = 0.95;
  double disk_low_watermark = 0.85;
  // A disk segment away this long (dropped and not mounted again, or
  // mounted again and its copies never offered in full) is retired: the
  // keys changed since are forgotten, and none of its old copies is taken
  // back (if mounted, demotion uses it again).
  duration away_disk_ttl = std::chrono::hours(1);
  std::uint64_t alignment = 64;                       // allocation granularity in bytes
  // First version and first segment id. 0 derives it from the wall clock, so
  // that ids handed out before a restart of the service are not reused after.
  std::uint64_t id_seed = 0;
};

// The id_seed a service picks when given none: microseconds since the
// epoch, which grow across restarts and leave 2^63 ids.
inline std::uint64_t wall_clock_seed() {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch());
  return static_cast<std::uint64_t>(us.count()) | 1;
}

// The options a service runs with: out-of-range values brought into range,
// the id seed chosen.
inline service_options sanitized(service_options o) {
  if (o.shards == 0) o.shards = 1;
  if (o.alignment == 0) o.alignment = 1;
  o.high_watermark = std::clamp(o.high_watermark, 0.0, 1.0);
  o.low_watermark = std::clamp(o.low_watermark, 0.0, o.high_watermark);
  o.demote_watermark = std::clamp(o.demote_watermark, 0.0, 1.0);
  o.disk_high_watermark = std::clamp(o.disk_high_watermark, 0.0, 1.0);
  o.disk_low_watermark = std::clamp(o.disk_low_watermark, 0.0, o.disk_high_watermark);
  o.lease_ttl = std::min(o.lease_ttl, o.max_lease_ttl);
  if (o.id_seed == 0) o.id_seed = wall_clock_seed();
  return o;
}

struct mount_result {
  errc status = errc::success;
  segment_id id = 0;
};

// What one maintain() call did.
struct maintenance_report {
  std::size_t dead_nodes = 0;
  std::size_t expired_puts = 0;
  std::size_t reclaimed_removed = 0;
  std::size_t evicted = 0;
  std::size_t released_segments = 0;  // remounted segments whose hold ended
  std::size_t expired_demotions = 0;  // disk reservations never reported
  std::size_t disk_evicted = 0;
};

struct service_stats {
  std::size_t objects = 0;          // committed and visible
  std::size_t pending_puts = 0;
  std::size_t removed_leased = 0;   // removed, memory held until the lease ends
  std::size_t nodes = 0;
  pool_usage pool;
  std::uint64_t evicted_total = 0;  // objects dropped by memory eviction (no disk copy)
  std::uint64_t expired_puts_total = 0;
  std::uint64_t dead_nodes_total = 0;
  // The disk tier.
  pool_usage disk;
  std::size_t disk_only_objects = 0;
  // Disk segments whose copies the service does not list until their node
  // offers them: dropped (node gone or declared dead), or mounted again.
  std::size_t disks_away = 0;
  std::size_t pending_demotions = 0;
  std::uint64_t demoted_total = 0;          // disk copies committed
  std::uint64_t memory_released_total = 0;  // evictions that kept the object on disk
  // Objects memory eviction dropped while their disk copy was being made
  // (when nothing else could make room): that copy's work was wasted.
  std::uint64_t demotions_dropped_total = 0;
  std::uint64_t disk_evicted_total = 0;     // objects dropped from disk
};

}  // namespace corokv::meta
