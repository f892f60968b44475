#pragma once
// The objects of one shard, by key: a detail::hash_index over entries that
// this table allocates. Each entry is one allocation with its key bytes
// stored just before it, so a hit costs the slot and about two lines of the
// entry, and putting an object allocates once.

#include <corokv/detail/hash_index.hpp>
#include <corokv/meta/object_entry.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string_view>

namespace corokv::meta {

class object_table {
 public:
  object_table() = default;
  object_table(const object_table&) = delete;
  object_table& operator=(const object_table&) = delete;
  ~object_table() {
    index_.for_each([](object_entry& e) { destroy(&e); });
  }

  std::size_t size() const noexcept { return index_.size(); }

  object_entry* find(std::string_view key, std::uint64_t hash) const noexcept { return index_.find(key, hash); }

  // Batched lookups call these ahead of find() to overlap cache misses, in
  // three stages a few keys apart: the home slot; then the entry that slot
  // names (key bytes, header and first replica); then the entry's LRU
  // neighbours, which a touch will write. Each stage reads only what the
  // previous one brought into the cache. A slot holding another hash (a
  // collision) is simply not followed: prefetches are hints.
  void prefetch_slot(std::uint64_t hash) const noexcept { index_.prefetch_home(hash); }
  void prefetch_entry(std::uint64_t hash) const noexcept {
    // The entry is not cached yet, so its key size is unknown: fetch a span
    // that covers keys of up to 64 bytes; longer keys are read on demand.
    constexpr std::size_t span = 64 + offsetof(object_entry, replicas) + sizeof(std::uint64_t) +
                                 sizeof(replica_descriptor);
    if (const object_entry* e = index_.home(hash)) {
      const char* p = reinterpret_cast<const char*>(e) - 64;
      for (std::size_t line = 0; line < span + 64; line += 64) __builtin_prefetch(p + line);
    }
  }
  void prefetch_neighbours(std::uint64_t hash) const noexcept {
    if (const object_entry* e = index_.home(hash)) {
      if (e->prev) __builtin_prefetch(e->prev, 1);
      if (e->next) __builtin_prefetch(e->next, 1);
    }
  }

  // Inserts a fresh entry for a key that is not in the table.
  object_entry& insert(std::string_view key, std::uint64_t hash) {
    object_entry* e = create(key, hash);
    index_.insert(e, hash);
    return *e;
  }

  // Removes and destroys the entry.
  void erase(object_entry* e) noexcept {
    index_.erase(e, e->hash);
    destroy(e);
  }

  template <class F>
  void for_each(F&& f) const {
    index_.for_each([&](object_entry& e) { f(static_cast<const object_entry&>(e)); });
  }
  template <class F>
  void for_each(F&& f) {
    index_.for_each(f);
  }

 private:
  struct key_of {
    std::string_view operator()(const object_entry& e) const noexcept { return e.key(); }
  };

  static object_entry* create(std::string_view key, std::uint64_t hash) {
    const std::size_t room = object_entry::key_room(key.size());
    char* memory = static_cast<char*>(::operator new(room + sizeof(object_entry)));
    std::memcpy(memory, key.data(), key.size());
    auto* e = new (memory + room) object_entry{};
    e->key_size = static_cast<std::uint32_t>(key.size());
    e->hash = hash;
    return e;
  }

  static void destroy(object_entry* e) noexcept {
    char* memory = const_cast<char*>(e->key_data());
    e->~object_entry();
    ::operator delete(memory);
  }

  detail::hash_index<object_entry, key_of> index_;
};

}  // namespace corokv::meta
