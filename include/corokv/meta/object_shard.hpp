#pragma once
// One shard of the object table: the objects whose keys hash to it, their
// LRU order, the puts still pending, and removed objects whose memory waits
// for their lease to end. Guarded by the shard's mutex; holds no other lock.

#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace corokv::meta {

struct object_entry {
  bool committed = false;
  std::uint64_t size = 0;
  version_t version = no_version;
  replica_list replicas;
  // committed: end of the lease (time_point{} = never leased);
  // pending: when the put times out.
  time_point deadline{};
  node_id writer = 0;          // pending only: whose death revokes the put
  std::uint64_t last_use = 0;  // LRU sequence number, committed only
  const std::string* key = nullptr;  // the map's own key, for erasure from a list
  object_entry* prev = nullptr;      // in lru (committed) or pending list
  object_entry* next = nullptr;

  bool leased(time_point now) const noexcept { return deadline > now; }
};

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

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// A removed object still under lease: hidden from every lookup, but its
// replicas keep their space until the lease ends.
struct removed_object {
  replica_list replicas;
  time_point lease_deadline;
};

struct object_shard {
  std::mutex mu;
  std::unordered_map<std::string, object_entry, string_hash, std::equal_to<>> objects;
  entry_list lru;
  entry_list pending;
  std::vector<removed_object> removed;

  object_entry* find(std::string_view key) {
    auto it = objects.find(key);
    return it == objects.end() ? nullptr : &it->second;
  }

  object_entry& insert_pending(std::string_view key) {
    auto [it, inserted] = objects.try_emplace(std::string(key));
    it->second.key = &it->first;
    pending.push_front(&it->second);
    return it->second;
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

  // Unlinks and erases an entry; the caller has dealt with its replicas.
  void erase(object_entry& e) {
    (e.committed ? lru : pending).unlink(&e);
    objects.erase(objects.find(std::string_view(*e.key)));  // by iterator: e.key points into the node
  }
};

}  // namespace corokv::meta
