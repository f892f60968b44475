#pragma once
// The one walk over the shards' LRU lists, oldest first: memory eviction,
// disk eviction and demotion all take objects in this order. Each shard's
// list is ordered by last use; the walk merges the shards by comparing
// their oldest candidates' last_use (a global order up to uses that
// happened while a shard was not yet locked). The caller holds every
// shard's lock.

#include <corokv/detail/intrusive_list.hpp>
#include <corokv/meta/object_shard.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace corokv::meta {

using object_list = detail::intrusive_list<object_entry>;

// Visits the objects of one list of every shard (`list`: &object_shard::lru,
// copied_lru or disk_lru) oldest first, skipping those `eligible(e)` refuses.
// `visit(shard, e)` may take e out of its list or erase it (the walk has
// already stepped past it); it returns false to stop.
template <class Eligible, class Visit>
void walk_oldest(std::span<const std::unique_ptr<object_shard>> shards, object_list object_shard::*list,
                 Eligible&& eligible, Visit&& visit) {
  auto next_eligible = [&](object_entry* e) {
    while (e && !eligible(*e)) e = e->prev;
    return e;
  };
  const std::size_t n = shards.size();
  std::vector<object_entry*> cursor(n);
  for (std::size_t s = 0; s < n; ++s) cursor[s] = next_eligible(((*shards[s]).*list).back());
  for (;;) {
    std::size_t best = n;
    for (std::size_t s = 0; s < n; ++s)
      if (cursor[s] && (best == n || cursor[s]->last_use < cursor[best]->last_use)) best = s;
    if (best == n) return;
    object_entry& e = *cursor[best];
    cursor[best] = next_eligible(e.prev);
    if (!visit(*shards[best], e)) return;
  }
}

inline constexpr auto every_object = [](const object_entry&) { return true; };

}  // namespace corokv::meta
