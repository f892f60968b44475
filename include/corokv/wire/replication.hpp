#pragma once
// The messages between a leading master and its followers (see
// net/replication_hub.hpp and net/follower_link.hpp):
//
//   follower -> leader   follow        once, on a fresh connection
//   leader -> follower   follow|0x80   replication_batch, many: first a
//                                      snapshot (start, parts, end at the
//                                      journal position it holds), then
//                                      the journal from that position on
//   follower -> leader   replica_ack   the last position applied; never
//                                      answered
//
// Journal records (meta/journal.hpp) travel as log_record: each kind
// carries only its own fields.

#include <corokv/meta/journal.hpp>
#include <corokv/types.hpp>
#include <corokv/wire/codec.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace corokv::wire {

struct log_record {
  meta::journal_kind kind = meta::journal_kind::node_registered;
  node_id node = 0;
  bool expires = true;
  bool held = false;
  segment_descriptor segment;
  std::vector<segment_id> segments;
  std::string_view key;
  std::uint64_t size = 0;
  version_t version = no_version;
  replica_list replicas;

  static log_record of(const meta::journal_record& r) {
    return {r.kind, r.node, r.expires, r.held, r.segment, {r.segments.begin(), r.segments.end()}, r.key, r.size,
            r.version, r.replicas};
  }
  // Views this record: valid while it lives.
  meta::journal_record view() const {
    return {kind, node, expires, held, segment, segments, key, size, version, replicas};
  }
  friend bool operator==(const log_record&, const log_record&) = default;
};

struct follow_request {
  std::string_view name;  // the follower, for the leader's metrics and logs
  friend bool operator==(const follow_request&, const follow_request&) = default;
};

enum class replication_phase : std::uint8_t {
  snapshot_start = 1,  // the follower clears its copy, then applies the records
  snapshot_part,       // more of the snapshot
  snapshot_end,        // the copy now holds the journal up to `seq`
  log,                 // records at positions seq, seq + 1, ...
};

struct replication_batch {
  errc status = errc::success;
  replication_phase phase = replication_phase::log;
  std::uint64_t seq = 0;
  std::vector<log_record> records;
  friend bool operator==(const replication_batch&, const replication_batch&) = default;
};

struct replica_ack_request {
  std::uint64_t applied = 0;
  friend bool operator==(const replica_ack_request&, const replica_ack_request&) = default;
};

template <class A> void descriptor(A& a, segment_descriptor& d);  // messages.hpp

template <class A>
void record_fields(A& a, log_record& r) {
  using meta::journal_kind;
  std::uint8_t kind = static_cast<std::uint8_t>(r.kind);
  a.u8(kind);
  if (kind == 0 || kind > meta::last_journal_kind) return a.reject();
  if constexpr (A::reading) r.kind = static_cast<journal_kind>(kind);
  switch (r.kind) {
    case journal_kind::node_registered:
      a.u64(r.node);
      flag(a, r.expires);
      return;
    case journal_kind::node_left: return a.u64(r.node);
    case journal_kind::segment_mounted:
      descriptor(a, r.segment);
      return flag(a, r.held);
    case journal_kind::segments_dropped:
      u64s(a, r.segments);
      return a.u64(r.node);
    case journal_kind::object_reserved:
      a.string(r.key);
      a.u64(r.size);
      a.u64(r.version);
      replicas(a, r.replicas);
      return a.u64(r.node);
    case journal_kind::object_committed:
    case journal_kind::object_released:
      a.string(r.key);
      return a.u64(r.version);
    case journal_kind::object_removed:
      a.string(r.key);
      a.u64(r.version);
      return replicas(a, r.replicas);
    case journal_kind::removed_reclaimed: return a.u64(r.version);
    case journal_kind::object_replicas_changed:
      a.string(r.key);
      a.u64(r.version);
      return replicas(a, r.replicas);
  }
}

template <class A> void fields(A& a, follow_request& m) { a.string(m.name); }
template <class A> void fields(A& a, replica_ack_request& m) { a.u64(m.applied); }
template <class A> void fields(A& a, replication_batch& m) {
  a.status_code(m.status);
  std::uint8_t phase = static_cast<std::uint8_t>(m.phase);
  a.u8(phase);
  if (phase == 0 || phase > static_cast<std::uint8_t>(replication_phase::log)) return a.reject();
  if constexpr (A::reading) m.phase = static_cast<replication_phase>(phase);
  a.u64(m.seq);
  list(a, m.records, 9, [](A& ar, log_record& r) { record_fields(ar, r); });
}

}  // namespace corokv::wire
