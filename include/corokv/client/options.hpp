#pragma once
// What a store is configured with, and what batch_get answers per key.

#include <corokv/memory/buffer_pool.hpp>
#include <corokv/meta/clock.hpp>
#include <corokv/types.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace corokv::client {

struct store_options {
  node_id node = 0;  // this store's node id; 0 picks a random one
  // Lease requested by every query. The client trusts a lease until
  // sent_at + lease_ttl - lease_margin, measured on its own clock from the
  // moment the request was sent: no clock synchronisation is needed, and the
  // margin absorbs transfer start-up and clock-rate differences.
  duration lease_ttl = std::chrono::seconds(5);
  duration lease_margin = std::chrono::milliseconds(100);
  std::size_t cache_capacity = 1 << 16;  // keys in the metadata cache; 0 disables it
  bool populate_segments = true;         // fault segment memory in at add_segment, not on first write
  // The buffer pool that batch_get(keys[, query_results]) reads into: one
  // region of this size, registered with every lane at construction (0: no
  // pool; those forms then fail every key with pool_exhausted). Its pages
  // are committed as they are first used unless populated.
  std::uint64_t buffer_pool_size = std::uint64_t{64} << 20;
  bool populate_buffer_pool = false;
  meta::clock_source clock = meta::steady_clock_source();
};

struct get_options {
  // Strict: keys whose caller-supplied query result is missing, failed or
  // expired are reported (the result's status, or lease_expired) instead of
  // being re-queried.
  bool strict = false;
};

// Where batch_get found the metadata it read a key with.
enum class key_source : std::uint8_t {
  none,     // not read (the key failed before any transfer)
  caller,   // the caller's query_result, lease still valid: no round trip
  cache,    // the store's metadata cache, lease still valid: no round trip
  requery,  // re-queried in the batch's one metadata round trip
};

struct get_result {
  errc status = errc::not_found;
  std::uint64_t size = 0;  // bytes written into the key's buffer
  version_t version = no_version;
  key_source source = key_source::none;

  bool ok() const noexcept { return status == errc::success; }
  std::error_code ec() const noexcept { return status; }
};

// What batch_get without caller buffers answers per key: the bytes in a
// handle that owns them (move-only; the memory returns to the store's pool
// when the handle is destroyed or released).
struct get_buffer_result {
  errc status = errc::not_found;
  version_t version = no_version;
  key_source source = key_source::none;
  memory::buffer_handle buffer;  // the object's bytes if ok(), else empty

  bool ok() const noexcept { return status == errc::success; }
  std::error_code ec() const noexcept { return status; }
  std::size_t size() const noexcept { return buffer.size(); }
};

}  // namespace corokv::client
