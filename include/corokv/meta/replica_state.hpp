#pragma once
// A follower's copy of the leader's replicated state, kept by applying the
// leader's journal records (meta/journal.hpp) in order, and turned into a
// serving service when the follower takes over (promote).
//
// Plain maps, no allocator: a follower records where the leader placed
// things and never decides anything, so it needs no free lists until it
// leads. promote() rebuilds them from the objects' ranges.

#include <corokv/meta/journal.hpp>
#include <corokv/meta/service.hpp>

#include <algorithm>
#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace corokv::meta {

// How far a copy of the replicated state goes: none (`whole` false: a
// master that has just started, and has loaded no snapshot yet), or a whole
// snapshot from the leader of `term` and that leader's journal after it, up
// to position `applied`. Positions of one term count the same journal, so
// (term, applied) orders copies: a newer term's copy holds everything its
// leader took over, and within a term the further copy holds more. No copy
// is behind every whole one.
struct copy_position {
  bool whole = false;
  std::uint64_t term = 0;
  std::uint64_t applied = 0;

  friend bool operator==(const copy_position& a, const copy_position& b) noexcept {
    return a.whole == b.whole && (!a.whole || (a.term == b.term && a.applied == b.applied));
  }
  friend std::strong_ordering operator<=>(const copy_position& a, const copy_position& b) noexcept {
    if (a.whole != b.whole) return a.whole <=> b.whole;
    if (!a.whole) return std::strong_ordering::equal;
    if (a.term != b.term) return a.term <=> b.term;
    return a.applied <=> b.applied;
  }
};

struct promote_report {
  std::size_t nodes = 0;
  std::size_t segments = 0;
  std::size_t objects = 0;  // committed and pending
  std::size_t removed = 0;
  std::size_t refused = 0;  // entries whose space was taken or whose segment is gone (a bug if nonzero)
};

class replica_state {
 public:
  struct object {
    std::uint64_t size = 0;
    version_t version = no_version;
    replica_list replicas;
    node_id writer = 0;
    bool committed = false;
  };

  // Applies one record. Records about things this copy does not hold (a
  // release of an unknown key) change nothing: they are counted, since in a
  // stream that began with a snapshot they mean a bug.
  void apply(const journal_record& r) {
    ++applied_;
    switch (r.kind) {
      case journal_kind::node_registered: nodes_[r.node] = r.expires; return;
      case journal_kind::node_left: nodes_.erase(r.node); return;
      case journal_kind::segment_mounted:
        segments_[r.segment.id] = {r.segment, r.held};
        max_id_ = std::max(max_id_, r.segment.id);
        return;
      case journal_kind::segments_dropped: return drop(r);
      case journal_kind::object_reserved: {
        auto it = objects_.find(r.key);
        if (it == objects_.end()) it = objects_.emplace(std::string(r.key), object{}).first;
        it->second = {r.size, r.version, r.replicas, r.node, false};
        note_ids(r);
        return;
      }
      case journal_kind::object_committed:
        if (auto it = find_entry(r.key, r.version); it != objects_.end()) it->second.committed = true;
        return;
      case journal_kind::object_released:
        if (auto it = find_entry(r.key, r.version); it != objects_.end()) objects_.erase(it);
        return;
      case journal_kind::object_removed:
        // Without a key: a removed object in a snapshot.
        if (!r.key.empty())
          if (auto it = find_entry(r.key, r.version); it != objects_.end()) objects_.erase(it);
        if (!r.replicas.empty()) removed_[r.version] = r.replicas;
        note_ids(r);
        return;
      case journal_kind::removed_reclaimed:
        if (removed_.erase(r.version) == 0) ++unmatched_;
        return;
      case journal_kind::object_replicas_changed:
        if (auto it = find_entry(r.key, r.version); it != objects_.end()) it->second.replicas = r.replicas;
        note_ids(r);  // a disk copy's epoch is an id of its own
        return;
    }
    ++unmatched_;
  }

  // Before a new snapshot.
  void clear() {
    nodes_.clear();
    segments_.clear();
    objects_.clear();
    removed_.clear();
  }

  // A service holding this state (see service::restore_object for how the
  // previous leader's leases are honoured). Its first version and segment id
  // lie above every one this copy has seen, and above the wall-clock seed a
  // fresh service would pick.
  std::unique_ptr<service> promote(service_options options, clock_source clock, promote_report* report = nullptr) const {
    options.id_seed = std::max(wall_clock_seed(), max_id_ + 1) | 1;
    auto svc = std::make_unique<service>(options, std::move(clock));
    svc->refuse_disk_copies_below(options.id_seed);
    promote_report r;
    for (auto& [node, expires] : nodes_) r.nodes += svc->restore_node(node, expires);
    for (auto& [id, s] : segments_) r.segments += svc->restore_segment(s.descriptor, s.held);
    for (auto& [key, o] : objects_) {
      if (svc->restore_object(key, o.size, o.version, o.replicas, o.committed, o.writer))
        ++r.objects;
      else
        ++r.refused;
    }
    for (auto& [version, replicas] : removed_) {
      if (svc->restore_removed(version, replicas))
        ++r.removed;
      else
        ++r.refused;
    }
    if (report) *report = r;
    return svc;
  }

  std::size_t nodes() const noexcept { return nodes_.size(); }
  std::size_t segments() const noexcept { return segments_.size(); }
  std::size_t objects() const noexcept { return objects_.size(); }
  std::size_t removed() const noexcept { return removed_.size(); }
  std::uint64_t applied() const noexcept { return applied_; }
  std::uint64_t unmatched() const noexcept { return unmatched_; }
  const object* lookup(std::string_view key) const {
    auto it = objects_.find(key);
    return it == objects_.end() ? nullptr : &it->second;
  }

 private:
  // Keys are looked up as views: no string is built per record.
  struct key_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view k) const noexcept { return std::hash<std::string_view>{}(k); }
  };
  using object_map = std::unordered_map<std::string, object, key_hash, std::equal_to<>>;

  // Versions and replica epochs come from one counter: a promoted service
  // starts above both.
  void note_ids(const journal_record& r) {
    max_id_ = std::max(max_id_, r.version);
    for (const auto& replica : r.replicas) max_id_ = std::max(max_id_, replica.epoch);
  }

  object_map::iterator find_entry(std::string_view key, version_t version) {
    auto it = objects_.find(key);
    if (it == objects_.end() || it->second.version != version) {
      ++unmatched_;
      return objects_.end();
    }
    return it;
  }

  // The leader's drop_segments, applied to the copy.
  void drop(const journal_record& r) {
    auto dropped = [&](const replica_descriptor& d) {
      return std::find(r.segments.begin(), r.segments.end(), d.segment) != r.segments.end();
    };
    for (segment_id s : r.segments) segments_.erase(s);
    for (auto it = objects_.begin(); it != objects_.end();) {
      object& o = it->second;
      const bool affected = std::any_of(o.replicas.begin(), o.replicas.end(), dropped) ||
                            (!o.committed && r.node != 0 && o.writer == r.node);
      if (affected) o.replicas.erase_if(dropped);
      if (affected && (!o.committed || o.replicas.empty()))
        it = objects_.erase(it);
      else
        ++it;
    }
    for (auto it = removed_.begin(); it != removed_.end();) {
      it->second.erase_if(dropped);
      it = it->second.empty() ? removed_.erase(it) : std::next(it);
    }
  }

  std::unordered_map<node_id, bool> nodes_;
  struct segment {
    segment_descriptor descriptor;
    bool held = false;
  };
  std::map<segment_id, segment> segments_;
  object_map objects_;
  std::unordered_map<version_t, replica_list> removed_;
  std::uint64_t max_id_ = 0;  // the highest version, replica epoch or segment id seen
  std::uint64_t applied_ = 0;
  std::uint64_t unmatched_ = 0;
};

}  // namespace corokv::meta
