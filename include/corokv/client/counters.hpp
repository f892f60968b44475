#pragma once
// A store's running totals: how many metadata round trips it made, where the
// metadata for each read came from, how many bytes moved and where the time
// went. Updated with relaxed atomics; read as a snapshot struct or as JSON.

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace corokv::client {

// What a transport counts per lane (a way of moving bytes: memcpy, TCP,
// RDMA, disk).
struct lane_counters {
  std::string name;
  std::uint64_t batches = 0;        // calls of the lane's read or write
  std::uint64_t requests = 0;       // ranges given to the lane
  std::uint64_t bytes_read = 0;     // by requests that succeeded
  std::uint64_t bytes_written = 0;
  std::uint64_t failures = 0;       // requests that did not succeed
};

inline void to_json(nlohmann::json& j, const lane_counters& c) {
  j = nlohmann::json{{"batches", c.batches},
                     {"requests", c.requests},
                     {"bytes_read", c.bytes_read},
                     {"bytes_written", c.bytes_written},
                     {"failures", c.failures}};
}

struct store_counters {
  std::uint64_t batches = 0;                // batch operations completed
  std::uint64_t metadata_round_trips = 0;   // calls to the metadata service
  std::uint64_t keys_from_caller = 0;       // batch_get keys read with the caller's query results
  std::uint64_t keys_from_cache = 0;        // ... with cached metadata
  std::uint64_t keys_requeried = 0;         // ... after a re-query in the batch
  std::uint64_t keys_revalidated = 0;       // reads that finished after their lease and were re-checked
  std::uint64_t lease_expiries = 0;         // of those, keys failed with lease_expired
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::chrono::nanoseconds metadata_time{0};  // spent waiting for the metadata service
  std::chrono::nanoseconds data_time{0};      // spent moving data
  std::vector<lane_counters> lanes;           // what each lane of the transport moved

  double metadata_round_trips_per_batch() const noexcept {
    return batches ? static_cast<double>(metadata_round_trips) / static_cast<double>(batches) : 0.0;
  }
};

inline void to_json(nlohmann::json& j, const store_counters& c) {
  const auto per_batch = [&](std::chrono::nanoseconds t) {
    return c.batches ? static_cast<double>(t.count()) / static_cast<double>(c.batches) : 0.0;
  };
  j = nlohmann::json{{"batches", c.batches},
                     {"metadata_round_trips", c.metadata_round_trips},
                     {"metadata_round_trips_per_batch", c.metadata_round_trips_per_batch()},
                     {"keys_from_caller", c.keys_from_caller},
                     {"keys_from_cache", c.keys_from_cache},
                     {"keys_requeried", c.keys_requeried},
                     {"keys_revalidated", c.keys_revalidated},
                     {"lease_expiries", c.lease_expiries},
                     {"bytes_read", c.bytes_read},
                     {"bytes_written", c.bytes_written},
                     {"metadata_ns", c.metadata_time.count()},
                     {"data_ns", c.data_time.count()},
                     {"metadata_ns_per_batch", per_batch(c.metadata_time)},
                     {"data_ns_per_batch", per_batch(c.data_time)}};
  nlohmann::json lanes = nlohmann::json::object();
  for (const lane_counters& l : c.lanes) lanes[l.name] = l;
  j["lanes"] = std::move(lanes);
}

class counter_set {
 public:
  using counter = std::atomic<std::uint64_t>;
  counter batches{0}, metadata_round_trips{0}, keys_from_caller{0}, keys_from_cache{0}, keys_requeried{0},
      keys_revalidated{0}, lease_expiries{0}, bytes_read{0}, bytes_written{0}, metadata_ns{0}, data_ns{0};

  static void add(counter& c, std::uint64_t n) noexcept { c.fetch_add(n, std::memory_order_relaxed); }

  store_counters snapshot() const noexcept {
    auto get = [](const counter& c) { return c.load(std::memory_order_relaxed); };
    store_counters s;
    s.batches = get(batches);
    s.metadata_round_trips = get(metadata_round_trips);
    s.keys_from_caller = get(keys_from_caller);
    s.keys_from_cache = get(keys_from_cache);
    s.keys_requeried = get(keys_requeried);
    s.keys_revalidated = get(keys_revalidated);
    s.lease_expiries = get(lease_expiries);
    s.bytes_read = get(bytes_read);
    s.bytes_written = get(bytes_written);
    s.metadata_time = std::chrono::nanoseconds(get(metadata_ns));
    s.data_time = std::chrono::nanoseconds(get(data_ns));
    return s;
  }
};

}  // namespace corokv::client
