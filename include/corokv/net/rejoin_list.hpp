#pragma once
// What a metadata connection redoes on every new connection, and when the
// master answers a heartbeat with node_unknown: the nodes registered through
// it register again, and their segments are mounted again under their old
// ids, each marked as a remount (the master then holds the segment back
// from allocation while leases from before may still be in use).
// Sans-I/O and thread-safe: calls record from any thread, the session reads
// on its strand.

#include <corokv/types.hpp>
#include <corokv/wire/messages.hpp>

#include <algorithm>
#include <mutex>
#include <vector>

namespace corokv::net {

class rejoin_list {
 public:
  void remember_node(node_id node) {
    std::lock_guard lock(mu_);
    if (std::find(nodes_.begin(), nodes_.end(), node) == nodes_.end()) nodes_.push_back(node);
  }
  // A segment mounted under mount.requested (the id the master gave it).
  void remember_mount(const wire::mount_request& mount) {
    std::lock_guard lock(mu_);
    mounts_.push_back(mount);
  }
  // The segment was unmounted: it is not mounted again.
  void forget_mount(segment_id segment) {
    std::lock_guard lock(mu_);
    std::erase_if(mounts_, [&](const wire::mount_request& m) { return m.requested == segment; });
  }
  // The node left: neither it nor its segments come back.
  void forget_node(node_id node) {
    std::lock_guard lock(mu_);
    std::erase(nodes_, node);
    std::erase_if(mounts_, [&](const wire::mount_request& m) { return m.node == node; });
  }

  std::vector<node_id> nodes() const {
    std::lock_guard lock(mu_);
    return nodes_;
  }
  // The node's segments, as remounts.
  std::vector<wire::mount_request> remounts_of(node_id node) const {
    std::lock_guard lock(mu_);
    std::vector<wire::mount_request> out;
    for (const auto& m : mounts_)
      if (m.node == node) {
        out.push_back(m);
        out.back().remount = true;
      }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<node_id> nodes_;
  std::vector<wire::mount_request> mounts_;
};

}  // namespace corokv::net
