#pragma once
// One well-formed instance of every message, shared by the wire tests and
// the fuzzers' seed corpus.

#include <corokv/wire/operations.hpp>

#include <string_view>
#include <utility>
#include <vector>

namespace corokv::wire::samples {

inline replica_list two_replicas() {
  replica_list r;
  r.push_back({11, 1, 4096, 100, 5});
  r.push_back({12, 2, 0, 100, std::uint64_t{1} << 40});  // epochs travel whole
  return r;
}

inline segment_endpoints some_endpoints() {
  return {"boot-id", "127.0.0.1", 7000, "/corokv-seg", 0x7f0000001000, 42, "fe80::1", 17};
}

inline rdma_endpoint some_rdma_endpoint() {
  rdma_endpoint e;
  for (std::size_t i = 0; i < e.gid.size(); ++i) e.gid[i] = static_cast<std::uint8_t>(0xf0 + i);
  e.qpn = 0x11;
  e.psn = 0xabcdef;
  e.initiator_depth = 16;
  e.responder_resources = 8;
  e.mtu = 3;
  e.lid = 0x1234;
  return e;
}

// One journal record of every kind, each with its fields set.
inline std::vector<log_record> every_log_record() {
  using meta::journal_kind;
  std::vector<log_record> out;
  auto add = [&](journal_kind k) -> log_record& {
    out.emplace_back();
    out.back().kind = k;
    return out.back();
  };
  auto& reg = add(journal_kind::node_registered);
  reg.node = 7;
  reg.expires = false;
  add(journal_kind::node_left).node = 7;
  auto& mounted = add(journal_kind::segment_mounted);
  mounted.segment = {99, 7, 1 << 20, some_endpoints(), storage_tier::disk};
  mounted.held = true;
  auto& dropped = add(journal_kind::segments_dropped);
  dropped.segments = {99, 100};
  dropped.node = 7;
  auto& reserved = add(journal_kind::object_reserved);
  reserved.key = "prompt-1/block-0";
  reserved.size = 100;
  reserved.version = 5;
  reserved.replicas = two_replicas();
  reserved.node = 7;
  for (auto k : {journal_kind::object_committed, journal_kind::object_released}) {
    auto& r = add(k);
    r.key = "k";
    r.version = 5;
  }
  auto& removed = add(journal_kind::object_removed);
  removed.key = "k";
  removed.version = 6;
  removed.replicas = two_replicas();
  add(journal_kind::removed_reclaimed).version = 6;
  auto& changed = add(journal_kind::object_replicas_changed);
  changed.key = "k";
  changed.version = 7;
  changed.replicas = two_replicas();
  return out;
}

// (type, request) pairs; keys are views of string literals.
inline std::vector<std::pair<message_type, request>> requests() {
  const std::vector<std::string_view> keys{"prompt-1/block-0", "prompt-1/block-1", "k"};
  return {
      {message_type::register_node, node_request{7}},
      {message_type::heartbeat, node_request{7}},
      {message_type::unregister_node, node_request{7}},
      {message_type::mount_segment, mount_request{7, 1 << 20, 99, some_endpoints(), true, storage_tier::disk}},
      {message_type::unmount_segment, unmount_request{99}},
      {message_type::list_segments, list_segments_request{}},
      {message_type::put_start, put_start_request{keys, {100, 200, 300}, 2, 7}},
      {message_type::put_end, versioned_keys_request{keys, {5, 6, 7}}},
      {message_type::put_revoke, versioned_keys_request{keys, {5, 6, 7}}},
      {message_type::validate, validate_request{keys, {5, 6, 7}, {{11, 1, 4096, 100, 5}, {12, 2, 0, 100, 6}, {13, 3, 64, 9, 7}}}},
      {message_type::query, query_request{keys, 5'000'000'000}},
      {message_type::exist, keys_request{keys}},
      {message_type::exist_prefix, keys_request{keys}},
      {message_type::remove, keys_request{keys}},
      {message_type::data_read, data_read_request{{{11, 4096, 100, 5}, {12, 0, 50, 6}}}},
      {message_type::data_write, data_write_request{{{11, 4096, 3, 5}, {12, 0, 2, 6}}}},
      {message_type::rdma_connect, rdma_connect_request{some_rdma_endpoint()}},
      {message_type::remove_all, remove_all_request{}},
      {message_type::follow, follow_request{"master-b"}},
      {message_type::replica_ack, replica_ack_request{123456}},
      {message_type::demote_start, demote_start_request{7, 256, 64 << 20, 41, 1234}},
      {message_type::demote_end,
       demote_end_request{keys, {5, 6, 7}, {errc::success, errc::transfer_failed, errc::success}}},
      {message_type::adopt_disk_copies,
       adopt_request{7, {disk_copy{"prompt-1/block-0", 5, {12, 7, 8192, 100, 0}}, disk_copy{"k", 6, {12, 7, 0, 4096, 0}}}}},
  };
}

inline std::vector<std::pair<message_type, response>> responses() {
  query_result found;
  found.status = errc::success;
  found.size = 100;
  found.version = 5;
  found.replicas = two_replicas();
  put_start_result reserved{errc::success, 5, two_replicas()};
  return {
      {message_type::register_node, status_response{errc::success}},
      {message_type::mount_segment, mount_response{errc::success, 99}},
      {message_type::list_segments, segments_response{errc::success, {{99, 7, 1 << 20, some_endpoints()}}}},
      {message_type::put_start, put_start_response{errc::success, {reserved, {errc::already_exists, 0, {}}}}},
      {message_type::put_end, statuses_response{errc::success, {errc::success, errc::timeout}}},
      {message_type::query, query_response{errc::success, {found, query_result{}}}},
      {message_type::exist_prefix, prefix_response{errc::success, {2, errc::not_found}}},
      {message_type::data_read, data_read_response{errc::success, {errc::success, errc::segment_not_found}, {4, 9}}},
      {message_type::rdma_connect, rdma_connect_response{errc::success, some_rdma_endpoint()}},
      {message_type::remove_all, count_response{errc::success, 12345}},
      {message_type::follow, replication_batch{errc::success, replication_phase::log, 77, every_log_record()}},
      {message_type::demote_start,
       demotions_response{errc::success,
                          {{demotion{"prompt-1/block-0", 5, {11, 7, 4096, 100, 5}, {12, 7, 8192, 100, 9}}, demotion{}},
                           {3, 4, 5},
                           44,
                           1234}}},
  };
}

// The bytes that must follow a data frame's table, for the samples above.
inline std::vector<std::byte> trailing_for(const request& r) {
  return std::vector<std::byte>(std::visit([](auto& m) { return trailing_size(m); }, r), std::byte{0x5a});
}
inline std::vector<std::byte> trailing_for(const response& r) {
  return std::vector<std::byte>(std::visit([](auto& m) { return trailing_size(m); }, r), std::byte{0xa5});
}

}  // namespace corokv::wire::samples
