#pragma once
// What the metadata service keeps for the disk tier beside its objects:
// - the disk extents reserved for demotions under way (demote_start hands
//   them out, demote_end commits or frees them, put_timeout expires them);
// - per disk segment, the copies the service released (removed, or dropped
//   from disk) that its node has not yet said it wrote down: demote_start
//   tells them, adopt_disk_copies refuses them;
// - disks that are away: dropped with their node, or mounted again while
//   their node lived on, whose copies the service does not list until the
//   node offers them; keys written or removed meanwhile, so that no stale
//   copy comes back; disks retired after away_disk_ttl.
//
// Sans-I/O and thread-safe: the reservations and the rest each have their
// own lock. The service calls in while holding shard locks, never the other
// way round: shards -> reservations -> released and away -> segment pool.

#include <corokv/types.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace corokv::meta {

// The extents handed out by demote_start, by the version of the object
// being copied. Not thread-safe on its own: disk_ledger::reservations()
// hands it out under its lock.
class demotion_reservations {
 public:
  struct reservation {
    std::string key;
    replica_descriptor from;  // the memory replica copied
    replica_descriptor to;    // the disk extent written
    time_point deadline;      // freed if not reported by then
  };

  bool contains(version_t v) const { return by_version_.count(v) != 0; }
  std::size_t size() const noexcept { return by_version_.size(); }
  void add(version_t v, reservation r) { by_version_.emplace(v, std::move(r)); }

  // The reservation for (key, v), taken out; nullopt if there is none.
  std::optional<reservation> take(version_t v, std::string_view key) {
    auto it = by_version_.find(v);
    if (it == by_version_.end() || it->second.key != key) return std::nullopt;
    reservation r = std::move(it->second);
    by_version_.erase(it);
    return r;
  }

  // Takes out every reservation for which pred(r) holds, calling gone(r).
  template <class Pred, class Gone>
  std::size_t remove_if(Pred&& pred, Gone&& gone) {
    std::size_t n = 0;
    for (auto it = by_version_.begin(); it != by_version_.end();) {
      if (!pred(it->second)) {
        ++it;
        continue;
      }
      gone(it->second);
      it = by_version_.erase(it);
      ++n;
    }
    return n;
  }

  template <class F>
  void for_each(F&& f) const {
    for (const auto& [v, r] : by_version_) f(v, r);
  }

 private:
  std::unordered_map<version_t, reservation> by_version_;
};

class disk_ledger {
 public:
  static constexpr std::size_t max_released = 1u << 20;       // per segment; oldest forgotten first
  static constexpr std::size_t max_removed_keys = 1u << 20;   // then every copy of an older away disk is refused
  static constexpr std::size_t max_retired_disks = 1u << 16;  // oldest forgotten first

  // Released copies and away tokens are numbered from `id_seed`, which
  // grows across restarts and failovers: a node's acknowledgement to an
  // earlier master lies below them.
  explicit disk_ledger(std::uint64_t id_seed) : released_seq_(id_seed), away_token_(id_seed) {}

  disk_ledger(const disk_ledger&) = delete;
  disk_ledger& operator=(const disk_ledger&) = delete;

  // ------------------------------------------------------------ reservations
  // f(demotion_reservations&) under the reservations' lock.
  template <class F>
  decltype(auto) reservations(F&& f) {
    std::lock_guard lock(reservations_mu_);
    return f(reservations_);
  }
  template <class F>
  decltype(auto) reservations(F&& f) const {
    std::lock_guard lock(reservations_mu_);
    return f(static_cast<const demotion_reservations&>(reservations_));
  }

  // ------------------------------------------------------------ disks
  // A disk segment was mounted (ever): until then the rest is skipped.
  void disk_mounted() noexcept { has_disk_.store(true, std::memory_order_relaxed); }
  bool any_disk() const noexcept { return has_disk_.load(std::memory_order_relaxed); }
  // Disks whose copies the service does not list.
  std::size_t away() const noexcept { return away_count_.load(std::memory_order_relaxed); }

  // The copy of version v on disk segment s was released: its node is told
  // until it says it wrote that down, and it is refused if offered.
  void released(segment_id s, version_t v) {
    std::lock_guard lock(mu_);
    released_[s].push(++released_seq_, v);
  }

  // Disks dropped with their node (left, declared dead) or unmounted: away
  // from `now`, under a new token.
  void dropped(std::span<const segment_id> disks, time_point now) {
    if (disks.empty()) return;
    std::lock_guard lock(mu_);
    for (segment_id s : disks) mark_away(s, now);
  }

  // A disk mounted again (`remount`) while its node lived on, or that this
  // service never knew: away until its node has offered its copies. A
  // retired disk's copies are all refused.
  void mounted_again(segment_id s, time_point now) {
    std::lock_guard lock(mu_);
    const bool retired = retired_.erase(s) != 0;
    mark_away(s, now, retired);
  }

  // A key was written or removed: a copy of it on a disk that is away now
  // must not come back (it was made before the change).
  void key_changed(std::string_view key) {
    if (away() == 0) return;
    std::lock_guard lock(mu_);
    if (away_.empty()) return;
    if (changed_keys_.size() >= max_removed_keys) {
      // The marker covers every key listed (all numbered below it): the
      // list starts again empty, for disks that go away later.
      changed_overflow_ = ++change_seq_;
      changed_keys_.clear();
    }
    changed_keys_[std::string(key)] = ++change_seq_;
  }
  // Every key changed (remove_all): nothing on a disk that is away now
  // comes back.
  void all_keys_changed() {
    if (away() == 0) return;
    std::lock_guard lock(mu_);
    if (away_.empty()) return;
    changed_overflow_ = ++change_seq_;
    changed_keys_.clear();
  }

  // A service promoted from a follower's copy knows neither the released
  // copies nor the keys changed while a disk was away (not journaled): it
  // refuses every offered copy older than its own first version.
  void refuse_below(version_t floor) {
    std::lock_guard lock(mu_);
    adoption_floor_ = floor;
  }

  // Whether an offered copy is stale: made before a failover, on a retired
  // disk, released, or of a key changed while its disk was away.
  bool refuses(const disk_copy& c) const {
    std::lock_guard lock(mu_);
    if (c.version < adoption_floor_) return true;
    if (retired_.count(c.replica.segment)) return true;
    if (auto r = released_.find(c.replica.segment); r != released_.end() && r->second.contains(c.version)) return true;
    auto away = away_.find(c.replica.segment);
    if (away == away_.end()) return false;
    if (away->second.refuse_all) return true;
    if (changed_overflow_ && *changed_overflow_ > away->second.since_seq) return true;
    auto k = changed_keys_.find(std::string(c.key));
    return k != changed_keys_.end() && k->second > away->second.since_seq;
  }

  // demote_start's answer about disk segment s (its node's): the released
  // copies not yet acknowledged (`saved_through`), up to `max` in all, and
  // whether the node must offer its copies first (offer_copies, a token). An
  // `offered` token that matches ends the disk's away period.
  void tell(segment_id s, std::uint64_t saved_through, std::uint64_t offered, demotion_work& work, std::size_t max) {
    std::lock_guard lock(mu_);
    if (auto away = away_.find(s); away != away_.end()) {
      if (offered != 0 && offered == away->second.token)
        end_away(s);  // every copy offered, and the node's index says so
      else
        work.offer_copies = away->second.token;
    }
    auto it = released_.find(s);
    if (it == released_.end()) return;
    auto& pending = it->second;
    while (!pending.in_order.empty() && pending.in_order.front().first <= saved_through) pending.pop();
    for (auto& [seq, version] : pending.in_order) {
      if (work.released.size() == max) break;
      work.released.push_back(version);
      work.released_through = std::max(work.released_through, seq);
    }
    if (pending.in_order.empty()) released_.erase(it);
  }

  // Disks away since `ttl` or longer are retired: nothing is remembered for
  // them, and none of their copies is taken back if they return (if mounted,
  // demotion uses them again). Returns how many.
  std::size_t retire(time_point now, duration ttl) {
    if (away() == 0) return 0;
    std::lock_guard lock(mu_);
    std::vector<segment_id> old;
    for (auto& [segment, a] : away_)
      if (a.since + ttl <= now) old.push_back(segment);
    for (segment_id segment : old) {
      if (retired_.insert(segment).second) retired_order_.push_back(segment);
      if (retired_order_.size() > max_retired_disks) {
        retired_.erase(retired_order_.front());
        retired_order_.pop_front();
      }
      released_.erase(segment);  // refused whole if it comes back
      end_away(segment);
    }
    return old.size();
  }

 private:
  // Per disk segment: (sequence number, version) of released copies its
  // node has not yet said it wrote down, in order, and looked up by version.
  struct released_copies {
    std::deque<std::pair<std::uint64_t, version_t>> in_order;
    std::unordered_set<version_t> versions;
    void push(std::uint64_t seq, version_t v) {
      in_order.emplace_back(seq, v);
      versions.insert(v);
      if (in_order.size() > max_released) pop();
    }
    void pop() {
      versions.erase(in_order.front().second);
      in_order.pop_front();
    }
    bool contains(version_t v) const { return versions.count(v) != 0; }
  };
  struct away_disk {
    time_point since;             // for retirement
    std::uint64_t since_seq = 0;  // for ordering against key changes
    std::uint64_t token = 0;
    bool refuse_all = false;  // retired before it came back: none of its copies is taken
  };

  // Under mu_: `s` is away from `since` (or since earlier, if it was
  // already), under a new token: an offer made for an earlier away period
  // does not end this one. Changes and away periods are ordered by one
  // counter taken under mu_ (not by a clock read before a batch's locks).
  void mark_away(segment_id s, time_point since, bool refuse_all = false) {
    auto [it, fresh] = away_.try_emplace(s, away_disk{since, ++change_seq_, 0, refuse_all});
    it->second.token = ++away_token_;
    it->second.refuse_all = it->second.refuse_all || refuse_all;
    if (fresh) away_count_.store(away_.size(), std::memory_order_relaxed);
  }
  void end_away(segment_id s) {
    away_.erase(s);
    away_count_.store(away_.size(), std::memory_order_relaxed);
    if (away_.empty()) {
      changed_keys_.clear();
      changed_overflow_.reset();
    }
  }

  mutable std::mutex reservations_mu_;
  demotion_reservations reservations_;

  mutable std::mutex mu_;  // guards everything below but the atomics
  std::unordered_map<segment_id, released_copies> released_;
  std::uint64_t released_seq_;
  std::unordered_map<segment_id, away_disk> away_;
  std::uint64_t away_token_;
  std::unordered_set<segment_id> retired_;
  std::deque<segment_id> retired_order_;
  std::uint64_t change_seq_ = 0;
  std::unordered_map<std::string, std::uint64_t> changed_keys_;  // key -> change_seq_
  std::optional<std::uint64_t> changed_overflow_;               // every key changed before it
  version_t adoption_floor_ = 0;
  std::atomic<std::size_t> away_count_{0};  // away_.size(), read without the lock
  std::atomic<bool> has_disk_{false};
};

}  // namespace corokv::meta
