#pragma once
// One object in the metadata table: committed or pending, its replicas and
// lease, and its place in its shard's LRU or pending list. Allocated by
// object_table together with its key bytes, which precede it in memory.

#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace corokv::meta {

// A key with its hash, computed once per batch.
struct hashed_key {
  std::string_view bytes;
  std::uint64_t hash;
};

// Which tiers a committed object's replicas lie on. It decides the object's
// list in its shard, and so what may take it: memory eviction releases the
// memory of `copied` objects first (they live on, on disk) and drops
// `memory` ones only after; disk eviction drops `disk` ones.
enum class residence : std::uint8_t {
  memory,  // every replica in memory
  copied,  // in memory, with a disk copy
  disk,    // every replica on disk
};

// The residence of replicas whose tiers are `t` (segment_pool::tiers).
template <class Tiers>
constexpr residence residence_of(const Tiers& t) {
  return t.all_disk ? residence::disk : t.any_disk ? residence::copied : residence::memory;
}

// Hot fields first: a query reads the key (stored just before the entry, see
// object_table), this header and the first replica, which together span about
// two cache lines for keys up to ~40 bytes.
struct object_entry {
  std::uint32_t key_size = 0;
  bool committed = false;
  residence where = residence::memory;  // committed only
  std::uint64_t size = 0;
  version_t version = no_version;
  // committed: end of the lease (time_point{} = never leased);
  // pending: when the put times out.
  time_point deadline{};
  std::uint64_t last_use = 0;    // LRU sequence number, committed only
  object_entry* prev = nullptr;  // in lru (committed) or pending list
  object_entry* next = nullptr;
  replica_list replicas;
  std::uint64_t hash = 0;
  node_id writer = 0;  // pending only: whose death revokes the put

  bool leased(time_point now) const noexcept { return deadline > now; }
  // The key bytes precede the entry, padded to its alignment.
  static constexpr std::size_t key_room(std::size_t key_size) noexcept {
    return (key_size + alignof(object_entry) - 1) / alignof(object_entry) * alignof(object_entry);
  }
  const char* key_data() const noexcept { return reinterpret_cast<const char*>(this) - key_room(key_size); }
  std::string_view key() const noexcept { return {key_data(), key_size}; }
};

}  // namespace corokv::meta
