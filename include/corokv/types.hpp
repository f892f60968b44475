#pragma once
// Vocabulary types shared by every layer: keys, ids, descriptors, per-key
// results and options. Nothing here allocates per key except key strings.

#include <corokv/error.hpp>

#include <algorithm>
#include <array>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace corokv {

// ---------------------------------------------------------------- time
// All deadlines live on the steady clock of the process that holds them.
// The metadata service's clock is injectable (tests drive it by hand), but it
// always speaks steady_clock time points.
using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using duration = std::chrono::nanoseconds;

// ---------------------------------------------------------------- ids
using version_t = std::uint64_t;   // 0 never names a committed object
using node_id = std::uint64_t;     // chosen by the node, stable across master restarts
using segment_id = std::uint64_t;  // proposed by its node at mount, or assigned by the service

inline constexpr version_t no_version = 0;

// ---------------------------------------------------------------- keys
// A key is an opaque byte string of 1..max_key_length bytes.
inline constexpr std::size_t max_key_length = 1024;

constexpr errc check_key(std::string_view key) noexcept {
  return key.empty() || key.size() > max_key_length ? errc::invalid_key : errc::success;
}

// A read-only view of a contiguous batch of keys, whether the caller holds
// them as std::string or std::string_view. Batches are passed by key_span so
// that neither representation has to be copied into the other.
class key_span {
 public:
  key_span() noexcept = default;
  key_span(std::span<const std::string> keys) noexcept  // NOLINT: implicit by design
      : data_(keys.data()), size_(keys.size()), strings_(true) {}
  key_span(std::span<const std::string_view> keys) noexcept  // NOLINT
      : data_(keys.data()), size_(keys.size()), strings_(false) {}
  key_span(const std::vector<std::string>& keys) noexcept  // NOLINT
      : key_span(std::span<const std::string>(keys)) {}
  key_span(const std::vector<std::string_view>& keys) noexcept  // NOLINT
      : key_span(std::span<const std::string_view>(keys)) {}

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::string_view operator[](std::size_t i) const noexcept {
    assert(i < size_);
    return strings_ ? std::string_view(static_cast<const std::string*>(data_)[i])
                    : static_cast<const std::string_view*>(data_)[i];
  }

  // The sub-batch [offset, offset + count).
  key_span subspan(std::size_t offset, std::size_t count) const noexcept {
    assert(offset + count <= size_);
    key_span s = *this;
    s.data_ = strings_ ? static_cast<const void*>(static_cast<const std::string*>(data_) + offset)
                       : static_cast<const void*>(static_cast<const std::string_view*>(data_) + offset);
    s.size_ = count;
    return s;
  }

 private:
  const void* data_ = nullptr;
  std::size_t size_ = 0;
  bool strings_ = false;
};

// ---------------------------------------------------------------- descriptors
// Where a segment's bytes can be reached. A segment is a contiguous region of
// memory contributed by one node; each transport reads what it understands.
struct segment_endpoints {
  std::string host_id;            // same host_id => shared memory may be used
  std::string tcp_host;           // data server address, empty if none
  std::uint16_t tcp_port = 0;
  std::string shm_name;           // shared-memory object other processes can map
  std::uint64_t base_address = 0; // address of the segment in its owner's process
  std::uint32_t rdma_rkey = 0;    // remote key when registered with a verbs device
  std::string rdma_gid;           // textual GID of the owner's port
  std::uint32_t rdma_qpn = 0;

  friend bool operator==(const segment_endpoints&, const segment_endpoints&) = default;
};

// What a segment's bytes live in. Puts land in memory; a node's disk
// segments hold copies of objects demoted from its memory (the disk tier).
enum class storage_tier : std::uint8_t { memory = 0, disk = 1 };

// Disk extents are allocated in whole blocks of this size: O_DIRECT's
// alignment for file offsets, lengths and memory on every common device.
inline constexpr std::uint64_t disk_block_size = 4096;

struct segment_descriptor {
  segment_id id = 0;
  node_id node = 0;
  std::uint64_t size = 0;
  segment_endpoints endpoints;
  storage_tier tier = storage_tier::memory;

  friend bool operator==(const segment_descriptor&, const segment_descriptor&) = default;
};

// One copy of an object: a byte range inside a segment. Valid only together
// with the version it was returned with.
//
// `epoch` names this placement of the bytes: the metadata service numbers
// every replica it places afresh (a put's replicas with their object's
// version, a disk copy or an adopted copy with a number of its own), and a
// number is never handed out twice. A range released and placed again,
// even for the same object, gets another epoch; so a reader whose transfer
// outlived its lease asks whether the object still lists the replica it
// read, epoch and all, and knows the bytes were not overwritten meanwhile.
struct replica_descriptor {
  segment_id segment = 0;
  node_id node = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t epoch = 0;

  friend bool operator==(const replica_descriptor&, const replica_descriptor&) = default;
};

// Replicas per object are capped so that results carry them inline: a batch
// of query results is one allocation, not one per key.
inline constexpr std::size_t max_replicas = 4;

class replica_list {
 public:
  replica_list() noexcept = default;
  // Copies only the replicas in use: results are copied per key on the
  // metadata hot path, and most objects have one replica of four slots.
  replica_list(const replica_list& other) noexcept { assign(other); }
  replica_list& operator=(const replica_list& other) noexcept {
    if (this != &other) assign(other);
    return *this;
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  bool full() const noexcept { return size_ == max_replicas; }
  const replica_descriptor* begin() const noexcept { return items_.data(); }
  const replica_descriptor* end() const noexcept { return items_.data() + size_; }
  replica_descriptor* begin() noexcept { return items_.data(); }
  replica_descriptor* end() noexcept { return items_.data() + size_; }
  const replica_descriptor& operator[](std::size_t i) const noexcept {
    assert(i < size_);
    return items_[i];
  }

  void push_back(const replica_descriptor& r) noexcept {
    assert(size_ < max_replicas);
    items_[size_++] = r;
  }
  void clear() noexcept { size_ = 0; }

  // Removes every replica for which pred holds; keeps the order of the rest.
  template <class Pred>
  std::size_t erase_if(Pred pred) noexcept {
    std::uint32_t kept = 0;
    for (std::uint32_t i = 0; i < size_; ++i)
      if (!pred(items_[i])) items_[kept++] = items_[i];
    const std::size_t removed = size_ - kept;
    size_ = kept;
    return removed;
  }

  friend bool operator==(const replica_list& a, const replica_list& b) noexcept {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  void assign(const replica_list& other) noexcept {
    size_ = other.size_;
    std::copy(other.begin(), other.end(), items_.begin());
  }

  std::uint32_t size_ = 0;  // first, so that it shares a cache line with the first replica
  std::array<replica_descriptor, max_replicas> items_{};
};

// ---------------------------------------------------------------- results
// The answer for one key of batch_query. lease_deadline is on the steady clock
// of whoever holds the result: the metadata service reports its own deadline;
// the client replaces it with sent_at + ttl - safety margin.
struct query_result {
  errc status = errc::not_found;
  std::uint64_t size = 0;
  version_t version = no_version;
  replica_list replicas;
  time_point lease_deadline{};

  bool ok() const noexcept { return status == errc::success; }
  error_code ec() const noexcept { return make_error_code(status); }
  friend bool operator==(const query_result&, const query_result&) = default;
};

// Put reservation for one key: where to write, and the version to commit.
struct put_start_result {
  errc status = errc::success;
  version_t version = no_version;
  replica_list replicas;

  bool ok() const noexcept { return status == errc::success; }
  error_code ec() const noexcept { return make_error_code(status); }
  friend bool operator==(const put_start_result&, const put_start_result&) = default;
};

// How many leading keys of a prefix chain exist, and what ended the match:
// success if every key matched, else the first failing key's status.
struct prefix_result {
  std::size_t matched = 0;
  errc stopped_by = errc::success;
  friend bool operator==(const prefix_result&, const prefix_result&) = default;
};

// One object for a node to copy from its memory to its disk: the metadata
// service's demote_start hands these out, with the disk extent reserved.
struct demotion {
  std::string key;
  version_t version = no_version;
  replica_descriptor from;  // the node's memory replica
  replica_descriptor to;    // the reserved extent on the node's disk segment
  friend bool operator==(const demotion&, const demotion&) = default;
};

// What demote_start hands a node: objects to copy, and the versions of its
// disk copies the service released since it last asked (removed, dropped
// from disk), which its tier's index must forget.
struct demotion_work {
  std::vector<demotion> copies;
  std::vector<version_t> released;
  std::uint64_t released_through = 0;  // echoed as saved_through once written down
  // Nonzero: the node's disk was mounted again while its process lived on
  // (it was declared dead and came back, or the master restarted), and the
  // service does not list its copies. The node offers them all
  // (adopt_disk_copies) and, once every part was answered and its index
  // says so, echoes this token in its next demote_start (`offered`); until
  // then nothing is reserved on that disk and keys changed meanwhile are
  // remembered.
  std::uint64_t offer_copies = 0;
  friend bool operator==(const demotion_work&, const demotion_work&) = default;
};

// A copy a restarted node finds on its disk (its tier's index) and offers
// to the service again (adopt_disk_copies).
struct disk_copy {
  std::string_view key;
  version_t version = no_version;
  replica_descriptor replica;  // on one of the node's disk segments
  friend bool operator==(const disk_copy&, const disk_copy&) = default;
};

// ---------------------------------------------------------------- options
struct put_options {
  std::size_t replicas = 1;  // copies on distinct segments, 1..max_replicas
};

}  // namespace corokv
