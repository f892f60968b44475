#pragma once
// One shard of the object table: the objects whose keys hash to it, their
// LRU order, the puts still pending, and removed objects whose memory waits
// for their lease to end. Guarded by the shard's mutex; holds no other lock.

#include <corokv/meta/object_entry.hpp>
#include <corokv/meta/object_table.hpp>
#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

namespace corokv::meta {

// Intrusive doubly-linked list: front = newest, back = oldest. An entry is
// in at most one list at a time (committed -> lru, pending -> pending).
class entry_list {
 public:
  object_entry* front() const noexcept { return head_; }
  object_entry* back() const noexcept { return tail_; }
  std::size_t size() const noexcept { return size_; }

  void push_front(object_entry* e) noexcept {
    e->prev = nullptr;
    e->next = head_;
    if (head_) head_->prev = e;
    head_ = e;
    if (!tail_) tail_ = e;
    ++size_;
  }
  void unlink(object_entry* e) noexcept {
    (e->prev ? e->prev->next : head_) = e->next;
    (e->next ? e->next->prev : tail_) = e->prev;
    e->prev = e->next = nullptr;
    --size_;
  }
  void move_to_front(object_entry* e) noexcept {
    if (head_ == e) return;
    unlink(e);
    push_front(e);
  }

 private:
  object_entry* head_ = nullptr;
  object_entry* tail_ = nullptr;
  std::size_t size_ = 0;
};

// A removed object still under lease: hidden from every lookup, but its
// replicas keep their space until the lease ends.
struct removed_object {
  replica_list replicas;
  time_point lease_deadline;
};

struct object_shard {
  std::mutex mu;
  object_table objects;
  entry_list lru;
  entry_list pending;
  std::vector<removed_object> removed;

  object_entry* find(const hashed_key& key) const { return objects.find(key.bytes, key.hash); }

  object_entry& insert_pending(const hashed_key& key) {
    object_entry& e = objects.insert(key.bytes, key.hash);
    pending.push_front(&e);
    return e;
  }

  void commit(object_entry& e, std::uint64_t use) {
    pending.unlink(&e);
    e.committed = true;
    e.deadline = time_point{};
    e.last_use = use;
    lru.push_front(&e);
  }

  void touch(object_entry& e, std::uint64_t use) {
    e.last_use = use;
    lru.move_to_front(&e);
  }

  // Unlinks and destroys an entry; the caller has dealt with its replicas.
  void erase(object_entry& e) {
    (e.committed ? lru : pending).unlink(&e);
    objects.erase(&e);
  }
};

}  // namespace corokv::meta
