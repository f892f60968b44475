#pragma once
// An open-addressing index from keys to caller-owned entries: linear probing
// over (hash, Entry*) slots. A probe compares 64-bit hashes and reads a key
// only on a hash match. Erasure shifts the rest of the cluster back (no
// tombstones), so probes stay short under churn. Load factor at most 1/2.
// The index never owns or allocates entries; KeyOf(entry) gives an entry's
// key bytes, and each entry remembers the hash it was inserted with.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace corokv::detail {

template <class Entry, class KeyOf>
class hash_index {
 public:
  std::size_t size() const noexcept { return size_; }

  Entry* find(std::string_view key, std::uint64_t hash) const noexcept {
    if (size_ == 0) return nullptr;
    for (std::size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const slot& s = slots_[i];
      if (!s.entry) return nullptr;
      if (s.hash == hash && KeyOf{}(*s.entry) == key) return s.entry;
    }
  }

  // The entry in the key's home slot, if it carries the same hash: what a
  // prefetch pipeline can follow without probing.
  Entry* home(std::uint64_t hash) const noexcept {
    if (size_ == 0) return nullptr;
    const slot& s = slots_[hash & mask_];
    return s.entry && s.hash == hash ? s.entry : nullptr;
  }
  void prefetch_home(std::uint64_t hash) const noexcept {
    if (size_ != 0) __builtin_prefetch(&slots_[hash & mask_]);
  }

  // Adds an entry whose key is not in the index.
  void insert(Entry* e, std::uint64_t hash) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    place(e, hash);
    ++size_;
  }

  void erase(Entry* e, std::uint64_t hash) noexcept {
    std::size_t i = hash & mask_;
    while (slots_[i].entry != e) i = (i + 1) & mask_;
    // Backward shift: a later member of the cluster moves into the hole
    // unless its home slot lies after the hole.
    for (std::size_t next = (i + 1) & mask_; slots_[next].entry; next = (next + 1) & mask_) {
      const std::size_t home_slot = slots_[next].hash & mask_;
      if (((next - home_slot) & mask_) >= ((next - i) & mask_)) {
        slots_[i] = slots_[next];
        i = next;
      }
    }
    slots_[i] = slot{};
    --size_;
  }

  template <class F>
  void for_each(F&& f) const {
    for (const auto& s : slots_)
      if (s.entry) f(*s.entry);
  }

 private:
  struct slot {
    std::uint64_t hash = 0;
    Entry* entry = nullptr;
  };

  void place(Entry* e, std::uint64_t hash) noexcept {
    std::size_t i = hash & mask_;
    while (slots_[i].entry) i = (i + 1) & mask_;
    slots_[i] = {hash, e};
  }

  void grow() {
    std::vector<slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, slot{});
    mask_ = slots_.size() - 1;
    for (auto& s : old)
      if (s.entry) place(s.entry, s.hash);
  }

  std::vector<slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace corokv::detail
