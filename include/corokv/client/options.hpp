#pragma once
// What a store is configured with, and what batch_get answers per key.

#include <corokv/meta/clock.hpp>
#include <corokv/types.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace corokv {

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

}  // namespace corokv
