#pragma once
// The objects of one shard, by key. Open addressing with linear probing over
// (hash, entry*) slots: a probe compares 64-bit hashes and touches a key only
// on a hash match. Each entry is one allocation with its key bytes stored
// right after it, so a hit costs the slot and the entry, nothing more.
// Erasure shifts the following cluster back (no tombstones), keeping probe
// lengths short under churn. Load factor at most 1/2.

#include <corokv/meta/object_entry.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string_view>
#include <vector>

namespace corokv::meta {

class object_table {
 public:
  object_table() = default;
  object_table(const object_table&) = delete;
  object_table& operator=(const object_table&) = delete;
  ~object_table() {
    for (auto& s : slots_)
      if (s.entry) destroy(s.entry);
  }

  std::size_t size() const noexcept { return size_; }

  object_entry* find(std::string_view key, std::uint64_t hash) const noexcept {
    if (size_ == 0) return nullptr;
    for (std::size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const slot& s = slots_[i];
      if (!s.entry) return nullptr;
      if (s.hash == hash && s.entry->key() == key) return s.entry;
    }
  }

  // Batched lookups call these ahead of find() to overlap cache misses, in
  // three stages a few keys apart: the home slot; then the entry that slot
  // names (key bytes, header and first replica); then the entry's LRU
  // neighbours, which a touch will write. Each stage reads only what the
  // previous one brought into the cache. A slot that does not hold the key's
  // hash (a collision) is simply not followed: prefetches are hints.
  void prefetch_slot(std::uint64_t hash) const noexcept {
    if (size_ != 0) __builtin_prefetch(&slots_[hash & mask_]);
  }
  void prefetch_entry(std::uint64_t hash) const noexcept {
    // The entry is not cached yet, so its key size is unknown: fetch a span
    // that covers keys of up to 64 bytes; longer keys are read on demand.
    constexpr std::size_t span = 64 + offsetof(object_entry, replicas) + sizeof(std::uint64_t) +
                                 sizeof(replica_descriptor);
    if (const object_entry* e = home_entry(hash)) {
      const char* p = reinterpret_cast<const char*>(e) - 64;
      for (std::size_t line = 0; line < span + 64; line += 64) __builtin_prefetch(p + line);
    }
  }
  void prefetch_neighbours(std::uint64_t hash) const noexcept {
    if (const object_entry* e = home_entry(hash)) {
      if (e->prev) __builtin_prefetch(e->prev, 1);
      if (e->next) __builtin_prefetch(e->next, 1);
    }
  }

  // Inserts a fresh entry for a key that is not in the table.
  object_entry& insert(std::string_view key, std::uint64_t hash) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    object_entry* e = create(key, hash);
    place(e);
    ++size_;
    return *e;
  }

  // Removes and destroys the entry.
  void erase(object_entry* e) noexcept {
    std::size_t i = e->hash & mask_;
    while (slots_[i].entry != e) i = (i + 1) & mask_;
    // Backward-shift deletion: move later members of the cluster into the
    // hole when their home slot does not lie after the hole.
    for (std::size_t next = (i + 1) & mask_; slots_[next].entry; next = (next + 1) & mask_) {
      const std::size_t home = slots_[next].hash & mask_;
      const bool movable = ((next - home) & mask_) >= ((next - i) & mask_);
      if (movable) {
        slots_[i] = slots_[next];
        i = next;
      }
    }
    slots_[i] = slot{};
    --size_;
    destroy(e);
  }

  template <class F>
  void for_each(F&& f) const {
    for (const auto& s : slots_)
      if (s.entry) f(static_cast<const object_entry&>(*s.entry));
  }
  template <class F>
  void for_each(F&& f) {
    for (auto& s : slots_)
      if (s.entry) f(*s.entry);
  }

 private:
  struct slot {
    std::uint64_t hash = 0;
    object_entry* entry = nullptr;
  };

  const object_entry* home_entry(std::uint64_t hash) const noexcept {
    if (size_ == 0) return nullptr;
    const slot& s = slots_[hash & mask_];
    return s.entry && s.hash == hash ? s.entry : nullptr;
  }

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

  void place(object_entry* e) noexcept {
    std::size_t i = e->hash & mask_;
    while (slots_[i].entry) i = (i + 1) & mask_;
    slots_[i] = {e->hash, e};
  }

  void grow() {
    std::vector<slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, slot{});
    mask_ = slots_.size() - 1;
    for (auto& s : old)
      if (s.entry) place(s.entry);
  }

  std::vector<slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace corokv::meta
