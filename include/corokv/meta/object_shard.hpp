#pragma once
// One shard of the object table: the objects whose keys hash to it, their
// LRU order, the puts still pending, and removed objects whose memory waits
// for their lease to end. Guarded by the shard's mutex; holds no other lock.

#include <corokv/detail/intrusive_list.hpp>
#include <corokv/meta/object_entry.hpp>
#include <corokv/meta/object_table.hpp>
#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

namespace corokv::meta {

// A removed object still under lease: hidden from every lookup, but its
// replicas keep their space until the lease ends.
struct removed_object {
  version_t version = no_version;
  replica_list replicas;
  time_point lease_deadline;
};

struct object_shard {
  std::mutex mu;
  object_table objects;
  // Committed objects by residence, each list by last use (arriving in a
  // list counts as a use): the order eviction takes them in.
  detail::intrusive_list<object_entry> lru;         // in memory only
  detail::intrusive_list<object_entry> copied_lru;  // in memory, with a disk copy
  detail::intrusive_list<object_entry> disk_lru;    // on disk only
  detail::intrusive_list<object_entry> pending;     // pending puts, by start
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
    e.where = residence::memory;
    e.deadline = time_point{};
    e.last_use = use;
    lru.push_front(&e);
  }

  void touch(object_entry& e, std::uint64_t use) {
    e.last_use = use;
    list_of(e).move_to_front(&e);
  }

  // Moves a committed entry to the list of its residence.
  void set_residence(object_entry& e, residence where) {
    if (!e.committed || e.where == where) return;
    list_of(e).unlink(&e);
    e.where = where;
    list_of(e).push_front(&e);
  }

  std::size_t committed() const noexcept { return lru.size() + copied_lru.size() + disk_lru.size(); }

  // Unlinks and destroys an entry; the caller has dealt with its replicas.
  void erase(object_entry& e) {
    list_of(e).unlink(&e);
    objects.erase(&e);
  }

  detail::intrusive_list<object_entry>& list_of(const object_entry& e) {
    if (!e.committed) return pending;
    switch (e.where) {
      case residence::memory: return lru;
      case residence::copied: return copied_lru;
      case residence::disk: return disk_lru;
    }
    return lru;
  }
};

}  // namespace corokv::meta
