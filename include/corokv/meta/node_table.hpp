#pragma once
// The nodes the metadata service knows, and when each was last heard from:
// liveness. A node that expires and stays silent for node_ttl is dead; one
// that does not expire (an in-process node, which lives as long as the
// service's process) leaves only when told.
//
// Thread-safe (one mutex). Some work must be atomic with a change of the
// table: a dead node's segments are dropped before it can register again,
// and a mounting node is added together with its segment. The forms that
// take a callback run it under the table's lock; the service takes its
// other locks inside (lock order: nodes -> shards -> ...).

#include <corokv/types.hpp>

#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace corokv::meta {

class node_table {
 public:
  struct node_state {
    time_point last_seen;
    bool expires = true;
  };
  using map = std::unordered_map<node_id, node_state>;

  // Registers a node, or registers it again: alive at `now`. then() runs
  // under the lock (the service journals the change there, in order).
  template <class Then>
  void enroll(node_id node, time_point now, bool expires, Then&& then) {
    std::lock_guard lock(mu_);
    nodes_[node] = node_state{now, expires};
    then();
  }

  // A heartbeat; false if the node is unknown (it must register again).
  bool heard(node_id node, time_point now) {
    std::lock_guard lock(mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return false;
    it->second.last_seen = now;
    return true;
  }

  bool known(node_id node) const {
    std::lock_guard lock(mu_);
    return nodes_.count(node) != 0;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return nodes_.size();
  }
  std::vector<node_id> list() const {
    std::lock_guard lock(mu_);
    std::vector<node_id> out;
    out.reserve(nodes_.size());
    for (auto& [id, state] : nodes_) out.push_back(id);
    return out;
  }

  // Removes `node` and runs on_gone() under the lock; false if unknown.
  template <class OnGone>
  bool leave(node_id node, OnGone&& on_gone) {
    std::lock_guard lock(mu_);
    if (nodes_.erase(node) == 0) return false;
    on_gone();
    return true;
  }

  // Removes every expiring node silent for `ttl` or longer at `now`,
  // running on_dead(node) for each under the lock. Returns how many.
  template <class OnDead>
  std::size_t expire(time_point now, duration ttl, OnDead&& on_dead) {
    std::lock_guard lock(mu_);
    std::vector<node_id> dead;
    for (auto& [id, state] : nodes_)
      if (state.expires && state.last_seen + ttl <= now) dead.push_back(id);
    for (node_id id : dead) {
      nodes_.erase(id);
      on_dead(id);
    }
    return dead.size();
  }

  // f(map&) under the lock: for work that must see the table unchanged
  // (a mount, a snapshot). Inside, add_if_absent may be used.
  template <class F>
  decltype(auto) locked(F&& f) {
    std::lock_guard lock(mu_);
    return f(nodes_);
  }
  template <class F>
  decltype(auto) locked(F&& f) const {
    std::lock_guard lock(mu_);
    return f(static_cast<const map&>(nodes_));
  }
  // Within locked(): registers `node` (expiring, alive at `now`) if it is
  // not known; true if it was added.
  static bool add_if_absent(map& nodes, node_id node, time_point now) {
    return nodes.try_emplace(node, node_state{now, true}).second;
  }

 private:
  mutable std::mutex mu_;
  map nodes_;
};

}  // namespace corokv::meta
