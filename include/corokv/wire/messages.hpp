#pragma once
// Every request and response of the metadata protocol and the data plane,
// as plain structs, each with one `fields` function that both encodes and
// decodes it. Decoded keys are views into the payload they came from.
//
// Data frames carry bytes after their table: a data_write request the bytes
// of each item, in order; a data_read response the bytes of each item that
// succeeded, in order. decode() checks that exactly those bytes follow and
// hands them back as `trailing`, so large values are never copied by the
// codec.
//
// Which payloads each message type carries, and the message set by type
// (decode_request, decode_response), are in operations.hpp.

#include <corokv/types.hpp>
#include <corokv/wire/codec.hpp>
#include <corokv/wire/frame.hpp>
#include <corokv/wire/replication.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

namespace corokv::wire {

// ------------------------------------------------------------ requests
struct node_request {  // register_node, heartbeat, unregister_node
  node_id node = 0;
  friend bool operator==(const node_request&, const node_request&) = default;
};
struct mount_request {
  node_id node = 0;
  std::uint64_t size = 0;
  segment_id requested = 0;
  segment_endpoints endpoints;
  bool remount = false;  // memory the node mounted before, under `requested`
  storage_tier tier = storage_tier::memory;
  friend bool operator==(const mount_request&, const mount_request&) = default;
};
struct unmount_request {
  segment_id segment = 0;
  friend bool operator==(const unmount_request&, const unmount_request&) = default;
};
struct list_segments_request {
  friend bool operator==(const list_segments_request&, const list_segments_request&) = default;
};
struct put_start_request {
  std::vector<std::string_view> keys;
  std::vector<std::uint64_t> sizes;
  std::uint8_t replicas = 1;
  node_id writer = 0;
  friend bool operator==(const put_start_request&, const put_start_request&) = default;
};
struct versioned_keys_request {  // put_end, put_revoke
  std::vector<std::string_view> keys;
  std::vector<version_t> versions;
  friend bool operator==(const versioned_keys_request&, const versioned_keys_request&) = default;
};
// Reads that finished after their lease: per key the version read and the
// replica it was read from (see meta::service::validate).
struct validate_request {
  std::vector<std::string_view> keys;
  std::vector<version_t> versions;
  std::vector<replica_descriptor> read_from;
  friend bool operator==(const validate_request&, const validate_request&) = default;
};
struct keys_request {  // exist, exist_prefix, remove
  std::vector<std::string_view> keys;
  friend bool operator==(const keys_request&, const keys_request&) = default;
};
struct query_request {
  std::vector<std::string_view> keys;
  std::int64_t ttl_ns = 0;
  friend bool operator==(const query_request&, const query_request&) = default;
};
// One range of a segment, as the data plane names it. The version lets a
// data server refuse ranges it knows to be stale.
struct data_item {
  segment_id segment = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  version_t version = no_version;
  friend bool operator==(const data_item&, const data_item&) = default;
};
struct data_read_request {
  std::vector<data_item> items;
  friend bool operator==(const data_read_request&, const data_read_request&) = default;
};
struct data_write_request {  // followed by every item's bytes
  std::vector<data_item> items;
  friend bool operator==(const data_write_request&, const data_write_request&) = default;
};
// One end of an RDMA reliable-connected queue pair, as the two ends tell
// each other when they connect (transport/rdma_lane.hpp).
struct rdma_endpoint {
  std::array<std::uint8_t, 16> gid{};     // the port's GID the queue pair uses
  std::uint32_t qpn = 0;                  // queue pair number (24 bits)
  std::uint32_t psn = 0;                  // first packet sequence number (24 bits)
  std::uint8_t initiator_depth = 0;       // RDMA reads this end can have outstanding
  std::uint8_t responder_resources = 0;   // RDMA reads this end can serve at once
  std::uint8_t mtu = 0;                   // the port's active MTU, as ibv_mtu counts
  std::uint16_t lid = 0;                  // the port's LID (InfiniBand; 0 on RoCE)
  friend bool operator==(const rdma_endpoint&, const rdma_endpoint&) = default;
};
struct rdma_connect_request {
  rdma_endpoint initiator;
  friend bool operator==(const rdma_connect_request&, const rdma_connect_request&) = default;
};
struct remove_all_request {
  friend bool operator==(const remove_all_request&, const remove_all_request&) = default;
};
struct demote_start_request {
  node_id node = 0;
  std::uint32_t max_objects = 0;
  std::uint64_t max_bytes = 0;
  std::uint64_t saved_through = 0;  // released copies the node has written down
  std::uint64_t offered = 0;        // the offer_copies token of the node's last complete offer
  friend bool operator==(const demote_start_request&, const demote_start_request&) = default;
};
struct adopt_request {
  node_id node = 0;
  std::vector<disk_copy> copies;  // keys are views into the payload
  friend bool operator==(const adopt_request&, const adopt_request&) = default;
};
struct demote_end_request {
  std::vector<std::string_view> keys;
  std::vector<version_t> versions;
  std::vector<errc> copied;  // per key: success, or why the copy is not there
  friend bool operator==(const demote_end_request&, const demote_end_request&) = default;
};

// ------------------------------------------------------------ responses
// `status` is the whole call's outcome; lists answer per key or item.
struct status_response {
  errc status = errc::success;
  friend bool operator==(const status_response&, const status_response&) = default;
};
struct mount_response {
  errc status = errc::success;
  segment_id id = 0;
  friend bool operator==(const mount_response&, const mount_response&) = default;
};
struct segments_response {
  errc status = errc::success;
  std::vector<segment_descriptor> segments;
  friend bool operator==(const segments_response&, const segments_response&) = default;
};
struct put_start_response {
  errc status = errc::success;
  std::vector<put_start_result> results;
  friend bool operator==(const put_start_response&, const put_start_response&) = default;
};
struct statuses_response {  // put_end, put_revoke, validate, exist, remove, data_write
  errc status = errc::success;
  std::vector<errc> results;
  friend bool operator==(const statuses_response&, const statuses_response&) = default;
};
// Lease deadlines do not travel: each side's clock is its own, and the
// client computes its deadline from when it sent the query.
struct query_response {
  errc status = errc::success;
  std::vector<query_result> results;
  friend bool operator==(const query_response&, const query_response&) = default;
};
struct prefix_response {
  errc status = errc::success;
  prefix_result result;
  friend bool operator==(const prefix_response&, const prefix_response&) = default;
};
struct data_read_response {  // followed by the bytes of each successful item
  errc status = errc::success;
  std::vector<errc> results;
  std::vector<std::uint64_t> lengths;
  friend bool operator==(const data_read_response&, const data_read_response&) = default;
};
struct rdma_connect_response {
  errc status = errc::success;
  rdma_endpoint responder;
  friend bool operator==(const rdma_connect_response&, const rdma_connect_response&) = default;
};
struct count_response {  // remove_all: how many objects it hid
  errc status = errc::success;
  std::uint64_t count = 0;
  friend bool operator==(const count_response&, const count_response&) = default;
};
struct demotions_response {
  errc status = errc::success;
  demotion_work work;
  friend bool operator==(const demotions_response&, const demotions_response&) = default;
};

// ------------------------------------------------------------ fields
template <class A> void fields(A& a, node_request& m) { a.u64(m.node); }
template <class A> void endpoints(A& a, segment_endpoints& e) {
  a.string(e.host_id);
  a.string(e.tcp_host);
  a.u16(e.tcp_port);
  a.string(e.shm_name);
  a.u64(e.base_address);
  a.u32(e.rdma_rkey);
  a.string(e.rdma_gid);
  a.u32(e.rdma_qpn);
}
inline constexpr std::size_t endpoints_min_size = 4 * 2 + 2 + 8 + 4 + 4;
template <class A> void tier(A& a, storage_tier& t) {
  std::uint8_t v = static_cast<std::uint8_t>(t);
  a.u8(v);
  if (v > static_cast<std::uint8_t>(storage_tier::disk)) return a.reject();
  if constexpr (A::reading) t = static_cast<storage_tier>(v);
}
template <class A> void fields(A& a, mount_request& m) {
  a.u64(m.node);
  a.u64(m.size);
  a.u64(m.requested);
  endpoints(a, m.endpoints);
  flag(a, m.remount);
  tier(a, m.tier);
}
template <class A> void fields(A& a, unmount_request& m) { a.u64(m.segment); }
template <class A> void fields(A&, list_segments_request&) {}
template <class A> void fields(A& a, put_start_request& m) {
  keys(a, m.keys);
  u64s(a, m.sizes);
  a.u8(m.replicas);
  a.u64(m.writer);
}
template <class A> void fields(A& a, versioned_keys_request& m) {
  keys(a, m.keys);
  u64s(a, m.versions);
}
template <class A> void fields(A& a, validate_request& m) {
  keys(a, m.keys);
  u64s(a, m.versions);
  list(a, m.read_from, replica_size, [](A& ar, replica_descriptor& r) { replica(ar, r); });
  if (m.versions.size() != m.keys.size() || m.read_from.size() != m.keys.size()) a.reject();
}
template <class A> void fields(A& a, keys_request& m) { keys(a, m.keys); }
template <class A> void fields(A& a, query_request& m) {
  keys(a, m.keys);
  a.i64(m.ttl_ns);
}
template <class A> void data_items(A& a, std::vector<data_item>& items) {
  list(a, items, 32, [](A& ar, data_item& d) {
    ar.u64(d.segment);
    ar.u64(d.offset);
    ar.u64(d.length);
    ar.u64(d.version);
  });
}
template <class A> void fields(A& a, data_read_request& m) { data_items(a, m.items); }
template <class A> void fields(A& a, data_write_request& m) { data_items(a, m.items); }
template <class A> void rdma_end(A& a, rdma_endpoint& e) {
  for (auto& b : e.gid) a.u8(b);
  a.u32(e.qpn);
  a.u32(e.psn);
  a.u8(e.initiator_depth);
  a.u8(e.responder_resources);
  a.u8(e.mtu);
  a.u16(e.lid);
  if (e.qpn >= (1u << 24) || e.psn >= (1u << 24)) a.reject();
}
template <class A> void fields(A& a, rdma_connect_request& m) { rdma_end(a, m.initiator); }
template <class A> void fields(A&, remove_all_request&) {}
template <class A> void fields(A& a, demote_start_request& m) {
  a.u64(m.node);
  a.u32(m.max_objects);
  a.u64(m.max_bytes);
  a.u64(m.saved_through);
  a.u64(m.offered);
}
template <class A> void fields(A& a, demote_end_request& m) {
  keys(a, m.keys);
  u64s(a, m.versions);
  statuses(a, m.copied);
  if (m.versions.size() != m.keys.size() || m.copied.size() != m.keys.size()) a.reject();
}

template <class A> void fields(A& a, status_response& m) { a.status_code(m.status); }
template <class A> void fields(A& a, mount_response& m) {
  a.status_code(m.status);
  a.u64(m.id);
}
template <class A> void descriptor(A& a, segment_descriptor& d) {
  a.u64(d.id);
  a.u64(d.node);
  a.u64(d.size);
  endpoints(a, d.endpoints);
  tier(a, d.tier);
}
template <class A> void fields(A& a, segments_response& m) {
  a.status_code(m.status);
  list(a, m.segments, 25 + endpoints_min_size, [](A& ar, segment_descriptor& d) { descriptor(ar, d); });
}
template <class A> void fields(A& a, put_start_response& m) {
  a.status_code(m.status);
  list(a, m.results, 10, [](A& ar, put_start_result& r) {
    ar.status_code(r.status);
    ar.u64(r.version);
    replicas(ar, r.replicas);
  });
}
template <class A> void fields(A& a, statuses_response& m) {
  a.status_code(m.status);
  statuses(a, m.results);
}
template <class A> void fields(A& a, query_response& m) {
  a.status_code(m.status);
  list(a, m.results, 18, [](A& ar, query_result& r) {
    ar.status_code(r.status);
    ar.u64(r.size);
    ar.u64(r.version);
    replicas(ar, r.replicas);
  });
}
template <class A> void fields(A& a, prefix_response& m) {
  a.status_code(m.status);
  std::uint64_t matched = m.result.matched;
  a.u64(matched);
  a.status_code(m.result.stopped_by);
  if constexpr (A::reading) m.result.matched = matched;
}
template <class A> void fields(A& a, data_read_response& m) {
  a.status_code(m.status);
  statuses(a, m.results);
  u64s(a, m.lengths);
  if (m.lengths.size() != m.results.size()) a.reject();
}
template <class A> void fields(A& a, rdma_connect_response& m) {
  a.status_code(m.status);
  rdma_end(a, m.responder);
}
template <class A> void fields(A& a, count_response& m) {
  a.status_code(m.status);
  a.u64(m.count);
}
template <class A> void fields(A& a, demotions_response& m) {
  a.status_code(m.status);
  list(a, m.work.copies, 2 + 8 + 2 * replica_size, [](A& ar, demotion& d) {
    ar.string(d.key);
    ar.u64(d.version);
    replica(ar, d.from);
    replica(ar, d.to);
  });
  u64s(a, m.work.released);
  a.u64(m.work.released_through);
  a.u64(m.work.offer_copies);
}
template <class A> void fields(A& a, adopt_request& m) {
  a.u64(m.node);
  list(a, m.copies, 2 + 8 + replica_size, [](A& ar, disk_copy& c) {
    ar.string(c.key);
    ar.u64(c.version);
    replica(ar, c.replica);
  });
}

// ------------------------------------------------------------ sizes known in advance
// A data reply answers every item of its request, so its table's size
// follows from the request alone: a client reads header and table in one
// go. (Checked against the encoder by the wire tests.)
inline constexpr std::size_t data_read_response_size(std::size_t items) { return 1 + 4 + items + 4 + 8 * items; }
inline constexpr std::size_t data_write_response_size(std::size_t items) { return 1 + 4 + items; }

// ------------------------------------------------------------ bytes after the table
// How many bytes must follow a message: 0 for all but the data frames.
template <class M>
std::uint64_t trailing_size(const M&) {
  return 0;
}
inline std::uint64_t trailing_size(const data_write_request& m) {
  std::uint64_t total = 0;
  for (auto& item : m.items) total = item.length > UINT64_MAX - total ? UINT64_MAX : total + item.length;
  return total;
}
inline std::uint64_t trailing_size(const data_read_response& m) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < m.results.size(); ++i)
    if (m.results[i] == errc::success)
      total = m.lengths[i] > UINT64_MAX - total ? UINT64_MAX : total + m.lengths[i];
  return total;
}

// ------------------------------------------------------------ encode / decode
// Appends the message's table to `payload` (data bytes are the caller's to
// append after it). invalid_argument if the message exceeds the limits.
template <class M>
errc encode(const M& message, std::vector<std::byte>& payload, const limits& lim = {}) {
  writer w(payload, lim);
  fields(w, const_cast<M&>(message));  // the writer only reads
  return w.status();
}

// Decodes a payload into `message`. protocol_error unless the table is
// well-formed and followed by exactly trailing_size(message) bytes, which
// are returned in `trailing`.
template <class M>
errc decode(std::span<const std::byte> payload, M& message, std::span<const std::byte>& trailing,
            const limits& lim = {}) {
  reader r(payload, lim);
  fields(r, message);
  if (r.status() != errc::success) return errc::protocol_error;
  if (trailing_size(message) != r.remaining()) return errc::protocol_error;
  trailing = r.rest();
  return errc::success;
}

// For streams: the data frames' bytes travel after the frame, outside its
// payload_size (so a batch of large values is bounded by the segments it
// names, not by max_payload). The payload then holds the table alone, and
// the receiver reads trailing_size(message) bytes straight into place.
template <class M>
errc decode_table(std::span<const std::byte> payload, M& message, const limits& lim = {}) {
  reader r(payload, lim);
  fields(r, message);
  if (r.status() != errc::success || !r.at_end()) return errc::protocol_error;
  return errc::success;
}

template <class M>
errc decode(std::span<const std::byte> payload, M& message, const limits& lim = {}) {
  std::span<const std::byte> trailing;
  return decode(payload, message, trailing, lim);
}

}  // namespace corokv::wire
