#pragma once
// The metadata service: which keys exist, where their replicas live, who holds
// a lease, and which nodes are alive. Sans-I/O: plain data structures behind
// mutexes and an injected clock. The embedded store calls it directly; the
// network server (net/) wraps the same object.
//
// Every object operation takes a batch of keys and writes one result per key,
// at the key's index, into an output span of the same length. A length
// mismatch fails the whole call with invalid_argument and writes nothing.
//
// Concurrency: all member functions are thread-safe. Keys are spread over
// shards, each with its own mutex, so batches from several threads proceed in
// parallel. Lock order: nodes -> shards (ascending) -> the disk ledger's
// reservations -> the rest of the disk ledger -> segment pool.

#include <corokv/detail/batch_plan.hpp>
#include <corokv/meta/clock.hpp>
#include <corokv/meta/disk_ledger.hpp>
#include <corokv/meta/invariants.hpp>
#include <corokv/meta/object_space.hpp>
#include <corokv/meta/node_table.hpp>
#include <corokv/meta/segment_pool.hpp>
#include <corokv/meta/service_options.hpp>
#include <corokv/meta/shard_set.hpp>
#include <corokv/meta/state_records.hpp>
#include <corokv/types.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace corokv::meta {

class service : object_space {
 public:
  explicit service(service_options options = {}, clock_source clock = steady_clock_source())
      : object_space(sanitized(options), std::move(clock)), next_version_(options_.id_seed) {}

  service(const service&) = delete;
  service& operator=(const service&) = delete;

  const service_options& options() const noexcept { return options_; }
  using object_space::now;

  // Every later change is also written to `j` (meta/journal.hpp), which must
  // outlive the service or be replaced first. Set it before the service is
  // shared between threads; nullptr stops recording.
  void set_journal(journal* j) noexcept { recorder_.set(j); }

  // ------------------------------------------------------------ nodes
  // Registers a node (idempotent) and marks it alive now. Node id 0 is
  // reserved for writers that do not take part in liveness. A node that does
  // not `expire` is never declared dead for silence: an in-process node,
  // which lives exactly as long as the service's process; it still leaves
  // through unregister_node.
  errc register_node(node_id node, bool expires = true) {
    if (node == 0) return errc::invalid_argument;
    nodes_.enroll(node, now(), expires, [&] { recorder_.node_registered(node, expires); });
    return errc::success;
  }

  // node_unknown tells the node to register again and remount its segments
  // (it was declared dead, or the service restarted).
  errc heartbeat(node_id node) { return nodes_.heard(node, now()) ? errc::success : errc::node_unknown; }

  // A graceful leave: the same clean-up as a death, at once.
  errc unregister_node(node_id node) {
    return nodes_.leave(node, [&] { drop_node(node); }) ? errc::success : errc::node_unknown;
  }

  std::vector<node_id> nodes() const { return nodes_.list(); }

  // ------------------------------------------------------------ segments
  // Mounts `size` bytes of the node's memory; registers the node if needed.
  // A node may propose the segment's id (`requested`, nonzero), so that it
  // can make the memory reachable under that id before any allocation can
  // land in it; a proposal in use by another node or with another size
  // answers already_exists.
  //
  // A disk segment (tier disk) takes no puts: it holds the node's demoted
  // copies, in whole disk blocks (at least one); a node has one at most
  // (invalid_argument for a second). A disk segment mounted again
  // (`remount`) reserves nothing until its node has offered the copies it
  // holds (adopt_disk_copies; demote_start says so with offer_copies).
  mount_result mount_segment(node_id node, std::uint64_t size, segment_endpoints endpoints = {},
                             segment_id requested = 0, bool remount = false,
                             storage_tier tier = storage_tier::memory) {
    if (node == 0 || size < options_.alignment) return {errc::invalid_argument, 0};
    if (tier == storage_tier::disk && size < disk_block_size) return {errc::invalid_argument, 0};
    if (tier == storage_tier::disk) ledger_.disk_mounted();
    return nodes_.locked([&](node_table::map& nodes) -> mount_result {
      // A node remounting what it already has (its connection to a remote
      // service broke and came back) gets the same segment, untouched.
      if (requested != 0)
        if (auto had = pool_.find(requested); had && had->node == node && had->size == size && had->tier == tier) {
          add_node(nodes, node);
          return {errc::success, requested};
        }
      // One disk segment per node: its tier numbers what it wrote down
      // (demote_start's saved_through) for that one segment.
      if (tier == storage_tier::disk)
        for (segment_id s : pool_.segments_of(node))
          if (pool_.tier_of(s) == storage_tier::disk) return {errc::invalid_argument, 0};
      // A remount of memory this service does not know (it restarted, or it
      // declared the node dead) may still be read under leases that an
      // earlier service, or this one before the node's death, granted and no
      // longer remembers. Nothing is allocated in it until every such lease
      // has run out.
      std::optional<time_point> held_until;
      if (remount) held_until = now() + options_.max_lease_ttl;
      // Recorded under the pool's lock, before any allocation can land in it.
      const segment_id id =
          pool_.mount(node, size, std::move(endpoints), requested, held_until, tier, [&](const segment_descriptor& d) {
            recorder_.segment_mounted(d, held_until.has_value());
          });
      if (id == 0) return {errc::already_exists, 0};
      if (tier == storage_tier::disk && remount) {
        // A disk that comes back: the copies on it are not listed here (they
        // were dropped with it, or this service never knew them) until its
        // node offers them (adopt_disk_copies); what changes meanwhile is
        // remembered, so that no stale copy is taken back. A retired one's
        // copies are all refused.
        ledger_.mounted_again(id, now());
      }
      add_node(nodes, node);
      return {errc::success, id};
    });
  }

  // Unmounts at once: the owner is taking its memory back, so replicas on the
  // segment are dropped even if leased, objects left without a replica are
  // erased, and pending puts with a replica there are revoked.
  errc unmount_segment(segment_id id) {
    if (!pool_.contains(id)) return errc::segment_not_found;
    const segment_id ids[] = {id};
    drop_segments(ids, 0);
    return errc::success;
  }

  std::vector<segment_descriptor> segments() const { return pool_.descriptors(); }
  std::optional<segment_descriptor> segment(segment_id id) const { return pool_.find(id); }

  // ------------------------------------------------------------ puts
  // Phase one of a put: reserves `sizes[i]` bytes on `options.replicas`
  // distinct segments for each key and a fresh version. The object stays
  // invisible until put_end. Per key: already_exists (committed),
  // put_in_progress (another pending put), invalid_argument (size 0),
  // replicas_unavailable (fewer segments than replicas), no_space (even after
  // eviction). `writer` (0 = anonymous) ties the reservation to a node's life.
  errc put_start(key_span keys, std::span<const std::uint64_t> sizes, const put_options& opts, node_id writer,
                 std::span<put_start_result> out) {
    if (sizes.size() != keys.size() || out.size() != keys.size()) return errc::invalid_argument;
    if (opts.replicas == 0 || opts.replicas > max_replicas) return errc::invalid_argument;
    if (writer != 0 && !nodes_.known(writer)) return errc::node_unknown;
    const time_point t = now();
    std::vector<std::uint32_t> retry;
    auto reserve = [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      out[i] = reserve_one(shard, key, sizes[i], opts.replicas, writer, t);
      if (out[i].status == errc::no_space && pool_.could_ever_fit(sizes[i], opts.replicas)) retry.push_back(i);
    };
    auto& plan = detail::thread_batch_plan();
    plan.build(keys, shards_.size());
    for (std::size_t i = 0; i < keys.size(); ++i) out[i] = {plan.admission(i), no_version, {}};
    shards_.for_each_group(plan, keys, reserve);

    if (!retry.empty()) {
      // An allocation failed: evict down to the low watermark, and at least
      // enough for every failed key's copies, then try those keys once more.
      std::uint64_t needed = 0;
      for (auto i : retry) {
        const bool overflows = sizes[i] > UINT64_MAX / opts.replicas || needed > UINT64_MAX - sizes[i] * opts.replicas;
        needed = overflows ? UINT64_MAX : needed + sizes[i] * opts.replicas;
      }
      evict(t, eviction_target(needed));
      for (auto i : retry) {
        const hashed_key key = shard_set::hashed(keys[i]);
        object_shard& shard = shards_.shard_for(key);
        std::lock_guard lock(shard.mu);
        out[i] = reserve_one(shard, key, sizes[i], opts.replicas, writer, t);
      }
    }
    evict_above_high_watermark(t);
    return errc::success;
  }

  // Phase two: makes each reservation visible. Per key: success (also when
  // already committed at that version: retries are harmless), not_found (no
  // such reservation), version_mismatch (another reservation or object),
  // timeout (the reservation expired; its space is freed).
  errc put_end(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    if (versions.size() != keys.size() || out.size() != keys.size()) return errc::invalid_argument;
    const time_point t = now();
    const std::uint64_t use = lru_clock_.fetch_add(keys.size());
    shards_.for_each_key(keys, out, [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      object_entry* e = shard.find(key);
      if (!e) return errc::not_found;
      if (e->version != versions[i]) return errc::version_mismatch;
      if (e->committed) return errc::success;
      if (!e->leased(t)) {
        release(shard, *e);
        ++expired_puts_total_;
        return errc::timeout;
      }
      shard.commit(*e, use + i);
      recorder_.object(journal_kind::object_committed, *e);
      // Newer than any copy on a disk that is away: that copy must not
      // stand in for it once this object is gone.
      ledger_.key_changed(key.bytes);
      return errc::success;
    });
    evict_above_high_watermark(t);
    return errc::success;
  }

  // Abandons reservations and frees their space. Per key: success,
  // not_found, version_mismatch, or already_exists if it was committed
  // meanwhile (use remove()).
  errc put_revoke(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    if (versions.size() != keys.size() || out.size() != keys.size()) return errc::invalid_argument;
    shards_.for_each_key(keys, out, [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      object_entry* e = shard.find(key);
      if (!e) return errc::not_found;
      if (e->version != versions[i]) return errc::version_mismatch;
      if (e->committed) return errc::already_exists;
      release(shard, *e);
      return errc::success;
    });
    return errc::success;
  }

  // ------------------------------------------------------------ reads
  // Looks keys up and grants or extends a lease on each found object:
  // deadline = max(deadline, now + ttl). Leased objects are neither evicted
  // nor, once removed, reclaimed. Marks them recently used.
  errc query(key_span keys, std::span<query_result> out) { return query(keys, options_.lease_ttl, out); }

  errc query(key_span keys, duration ttl, std::span<query_result> out) {
    if (out.size() != keys.size() || ttl < duration::zero() || ttl > options_.max_lease_ttl)
      return errc::invalid_argument;
    const time_point t = now();
    const time_point lease_end = t + ttl;
    const std::uint64_t use = lru_clock_.fetch_add(keys.size());
    auto& plan = detail::thread_batch_plan();
    plan.build(keys, shards_.size());
    // Each result is written exactly once: large batches overflow the cache.
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (plan.admission(i) != errc::success) {
        out[i] = query_result{};
        out[i].status = plan.admission(i);
      }
    shards_.for_each_group(plan, keys, [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      query_result& r = out[i];
      object_entry* e = shard.find(key);
      if (!e || !e->committed) {
        r = query_result{};
        return;
      }
      e->deadline = std::max(e->deadline, lease_end);
      shard.touch(*e, use + i);
      r.status = errc::success;
      r.size = e->size;
      r.version = e->version;
      r.replicas = e->replicas;
      r.lease_deadline = e->deadline;
    });
    return errc::success;
  }

  // Existence only: grants no lease and does not count as a use, so that
  // probes never hold memory back from eviction.
  errc exist(key_span keys, std::span<errc> out) {
    if (out.size() != keys.size()) return errc::invalid_argument;
    shards_.for_each_key(keys, out, [&](object_shard& shard, std::uint32_t, const hashed_key& key) {
      object_entry* e = shard.find(key);
      return e && e->committed ? errc::success : errc::not_found;
    });
    return errc::success;
  }

  // How many leading keys of a prefix chain exist: what a serving engine
  // asks to find the longest cached prefix. Grants no lease.
  prefix_result exist_prefix(key_span keys) {
    std::vector<errc> found(keys.size());
    exist(keys, found);
    prefix_result r;
    while (r.matched < found.size() && found[r.matched] == errc::success) ++r.matched;
    if (r.matched < found.size()) r.stopped_by = found[r.matched];
    return r;
  }

  // Whether reads that completed after their lease read the object's own
  // bytes: key i was read at versions[i] from replica read_from[i]. Per key:
  // success if the key names that version and the object still lists that
  // replica, epoch included (a replica is only ever released, never listed
  // again: a range placed anew gets a new epoch, so the bytes were not
  // overwritten while the read ran); lease_expired if the object lives on
  // but that replica was released (evicted after a disk copy, dropped from
  // disk, unmounted, its node declared dead); version_mismatch (the key now
  // names another object) or not_found. Grants no lease.
  errc validate(key_span keys, std::span<const version_t> versions, std::span<const replica_descriptor> read_from,
                std::span<errc> out) {
    if (versions.size() != keys.size() || read_from.size() != keys.size() || out.size() != keys.size())
      return errc::invalid_argument;
    shards_.for_each_key(keys, out, [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      object_entry* e = shard.find(key);
      if (!e || !e->committed) return errc::not_found;
      if (e->version != versions[i]) return errc::version_mismatch;
      const bool listed = std::find(e->replicas.begin(), e->replicas.end(), read_from[i]) != e->replicas.end();
      return listed ? errc::success : errc::lease_expired;
    });
    return errc::success;
  }

  // ------------------------------------------------------------ remove
  // Hides each key at once. Its memory is freed now if unleased, otherwise
  // when the lease ends (never earlier). Pending puts are not affected
  // (not_found): they are revoked with put_revoke.
  errc remove(key_span keys, std::span<errc> out) {
    if (out.size() != keys.size()) return errc::invalid_argument;
    const time_point t = now();
    shards_.for_each_key(keys, out, [&](object_shard& shard, std::uint32_t, const hashed_key& key) {
      object_entry* e = shard.find(key);
      if (!e || !e->committed) {
        ledger_.key_changed(key.bytes);  // a copy on a disk that is away must not bring it back
        return errc::not_found;
      }
      release_after_lease(shard, *e, t);  // notes the key too
      return errc::success;
    });
    return errc::success;
  }

  // Hides every committed object, as remove() does each: memory nobody
  // leases is freed now, leased memory when its lease ends. Pending puts are
  // not affected; they commit afterwards. Returns how many objects it hid.
  std::uint64_t remove_all() {
    const time_point t = now();
    ledger_.all_keys_changed();  // nothing on a disk that is away comes back
    std::uint64_t hidden = 0;
    for (auto& shard_ptr : shards_.all()) {
      object_shard& shard = *shard_ptr;
      std::lock_guard lock(shard.mu);
      for (auto* list : {&shard.lru, &shard.copied_lru, &shard.disk_lru})
        while (object_entry* e = list->back()) {
          release_after_lease(shard, *e, t);
          ++hidden;
        }
    }
    return hidden;
  }

  // ------------------------------------------------------------ disk tier
  // Work for `node`'s demotion. While memory use is above demote_watermark:
  // up to max_objects committed objects (max_bytes in all), oldest first,
  // that have a replica on the node's memory and none on disk, each with an
  // extent reserved on one of the node's disk segments. When the node's disk
  // is full, its oldest unleased disk-only objects are dropped to make room.
  // The node copies each `from` range into its `to` range and reports with
  // demote_end; a reservation not reported within put_timeout is freed.
  // `work.released` lists versions of the node's disk copies the service
  // released (removed, or dropped from disk), at most max_released_per_call,
  // and `work.released_through` the sequence number that covers them: the
  // node writes them down in its tier's index and says so in its next call
  // (`saved_through`). Until then they are told again, and
  // adopt_disk_copies refuses them. These are the leading master's alone:
  // a failover forgets them. `work.offer_copies` asks the node to offer the
  // copies its disk holds (adopt_disk_copies) because the service does not
  // list them (the disk was mounted again); no copies are handed out until
  // then.
  // Reservations are the leader's alone (not journaled): after a failover
  // demote_end answers not_found and the node simply goes on. A node runs
  // one demotion batch at a time, so a reservation freed late is never
  // written while it is handed out again.
  static constexpr std::size_t max_copies_per_call = 4096;
  static constexpr std::size_t max_released_per_call = 4096;
  errc demote_start(node_id node, std::size_t max_objects, std::uint64_t max_bytes, std::uint64_t saved_through,
                    std::uint64_t offered, demotion_work& work) {
    work.copies.clear();
    work.released.clear();
    work.released_through = saved_through;
    work.offer_copies = 0;
    if (node == 0) return errc::invalid_argument;
    max_objects = std::min(max_objects, max_copies_per_call);
    // A disk mounted again while its node's process lived on (declared dead
    // and back, or a master that restarted) is not listed here: nothing is
    // reserved on it until its node offered its copies.
    if (ledger_.any_disk())
      for (segment_id s : pool_.segments_of(node)) ledger_.tell(s, saved_through, offered, work, max_released_per_call);
    if (work.offer_copies != 0) return errc::success;
    std::vector<demotion>& out = work.copies;
    const time_point t = now();
    const pool_usage memory = pool_.usage();
    if (static_cast<double>(memory.used) <= static_cast<double>(memory.capacity) * options_.demote_watermark)
      return errc::success;
    auto locks = shards_.lock_all();
    ledger_.reservations([&](demotion_reservations& reserved) {
      // Memory-only objects, oldest first: the ones memory eviction would
      // drop next, so copying them first keeps them.
      std::uint64_t bytes = 0;
      std::size_t drop_budget = max_objects * 4 + 64;
      std::size_t scanned = 0;
      shards_.walk_oldest(&object_shard::lru, every_object, [&](object_shard&, object_entry& e) {
        if (out.size() >= max_objects || ++scanned > max_objects * 64 + 1024) return false;
        if (reserved.contains(e.version) || bytes + e.size > max_bytes) return true;
        const replica_descriptor* from = nullptr;
        for (const auto& r : e.replicas)
          if (r.node == node && !from) from = &r;
        if (!from || e.replicas.full()) return true;
        replica_descriptor to;
        errc st = pool_.allocate_disk(node, e.size, to);
        // Room on this node's disk: its oldest unleased disk-only objects go,
        // a bounded number per call.
        while (st == errc::no_space && drop_budget > 0) {
          if (evict_disk(t, node, 0, 1) == 0) drop_budget = 0;
          else --drop_budget;
          st = pool_.allocate_disk(node, e.size, to);
        }
        if (st != errc::success) return false;  // no disk here, or no room even so
        to.epoch = next_version_.fetch_add(1);
        reserved.add(e.version, {std::string(e.key()), *from, to, t + options_.put_timeout});
        out.push_back({std::string(e.key()), e.version, *from, to});
        bytes += e.size;
        return true;
      });
    });
    return errc::success;
  }

  // The node's report of a demote_start batch, per key: success if its copy
  // is on disk, else why not. Per key answers (aligned with keys): success
  // (the disk copy is committed beside the memory ones: the object is
  // readable from either, and eviction will release its memory without
  // dropping it), not_found (no such demotion, or the object is gone: its
  // extent is freed; also when the memory it was copied from was dropped
  // meanwhile, since drop_segments ends the demotions from it), and
  // version_mismatch; a failed copy frees its extent and answers with the
  // node's own status.
  errc demote_end(key_span keys, std::span<const version_t> versions, std::span<const errc> copied,
                  std::span<errc> out) {
    if (versions.size() != keys.size() || copied.size() != keys.size() || out.size() != keys.size())
      return errc::invalid_argument;
    shards_.for_each_key(keys, out, [&](object_shard& shard, std::uint32_t i, const hashed_key& key) {
      const auto taken =
          ledger_.reservations([&](demotion_reservations& reserved) { return reserved.take(versions[i], key.bytes); });
      if (!taken) return errc::not_found;
      const replica_descriptor to = taken->to;
      object_entry* e = shard.find(key);
      errc st = copied[i] == errc::success ? errc::success : copied[i];
      if (st == errc::success && (!e || !e->committed)) st = errc::not_found;
      if (st == errc::success && e->version != versions[i]) st = errc::version_mismatch;
      if (st == errc::success && (e->replicas.full() || e->size != to.length)) st = errc::invalid_argument;
      if (st != errc::success) {
        pool_.free(single(to));
        return st;
      }
      e->replicas.push_back(to);  // after the memory ones: readers try those first
      shard.set_residence(*e, residence_of(pool_.tiers(e->replicas)));
      ++demoted_total_;
      recorder_.object(journal_kind::object_replicas_changed, *e);
      return errc::success;
    });
    return errc::success;
  }

  // A service promoted from a follower's copy does not know which disk
  // copies the previous leader released or which keys changed while a disk
  // was away (neither is journaled): it refuses every offered copy older
  // than its own first version (absent, never stale). replica_state::promote
  // calls it.
  void refuse_disk_copies_below(version_t floor) { ledger_.refuse_below(floor); }

  // A restarted node's disk copies, found again by its tier's index: each
  // becomes a committed object under its old version, its one replica on
  // disk, if the key is free. Per copy: success; already_exists (the key
  // names an object now); not_found (the service released that copy, or the
  // key was removed or written while the disk was away: the copy is stale);
  // invalid_argument (not a disk segment of `node`, a bad key, or an extent
  // that is not free). A copy offered again that the service holds already
  // answers success. A disk's away period (see mount_segment) ends when its
  // node says in demote_start that it offered everything.
  errc adopt_disk_copies(node_id node, std::span<const disk_copy> copies, std::span<errc> out) {
    if (out.size() != copies.size()) return errc::invalid_argument;
    if (node == 0) return errc::invalid_argument;
    for (std::size_t i = 0; i < copies.size(); ++i) {
      const disk_copy& c = copies[i];
      const auto where = pool_.find(c.replica.segment);
      if (!where || where->tier != storage_tier::disk || where->node != node || c.replica.node != node ||
          check_key(c.key) != errc::success || c.version == no_version) {
        out[i] = errc::invalid_argument;
        continue;
      }
      const hashed_key key = shard_set::hashed(c.key);
      object_shard& shard = shards_.shard_for(key);
      std::lock_guard lock(shard.mu);
      if (const object_entry* e = shard.find(key)) {
        // Offered again (an answer was lost, or a part failed): the same copy.
        const bool same = e->committed && e->version == c.version &&
                          std::any_of(e->replicas.begin(), e->replicas.end(), [&](const replica_descriptor& r) {
                            return r.segment == c.replica.segment && r.offset == c.replica.offset &&
                                   r.length == c.replica.length;
                          });
        out[i] = same ? errc::success : errc::already_exists;
        continue;
      }
      if (ledger_.refuses(c)) {
        out[i] = errc::not_found;
        continue;
      }
      replica_list replicas;
      replicas.push_back(c.replica);
      if (!pool_.claim(replicas)) {
        out[i] = errc::invalid_argument;
        continue;
      }
      // Versions stay unique: the next one handed out lies above it.
      for (version_t next = next_version_.load(); next <= c.version;)
        if (next_version_.compare_exchange_weak(next, c.version + 1)) break;
      // A placement of its own: whatever a reader read from this extent
      // before the copy came back is not vouched for.
      replicas.begin()->epoch = next_version_.fetch_add(1);
      object_entry& e = shard.insert_pending(key);
      e.size = c.replica.length;
      e.version = c.version;
      e.replicas = replicas;
      recorder_.object(journal_kind::object_reserved, e);
      shard.commit(e, lru_clock_.fetch_add(1));
      shard.set_residence(e, residence::disk);
      recorder_.object(journal_kind::object_committed, e);
      out[i] = errc::success;
    }
    return errc::success;
  }

  // ------------------------------------------------------------ upkeep
  // Declares silent nodes dead, revokes expired pending puts, reclaims removed
  // objects whose lease ended, releases remounted segments whose hold ended
  // and evicts above the high watermark. The owner calls it periodically
  // (the embedded store and the server on a timer).
  maintenance_report maintain() {
    const time_point t = now();
    maintenance_report report;
    // A dead node's segments are dropped under the nodes lock: a node that
    // registers again meanwhile must not find its old segments still there
    // (and keep them) only to have them dropped after.
    report.dead_nodes = nodes_.expire(t, options_.node_ttl, [&](node_id node) { drop_node(node); });
    dead_nodes_total_ += report.dead_nodes;
    ledger_.retire(t, options_.away_disk_ttl);

    for (auto& shard_ptr : shards_.all()) {
      object_shard& shard = *shard_ptr;
      std::lock_guard lock(shard.mu);
      // The whole list: reservations made concurrently are not strictly in
      // deadline order.
      for (object_entry* e = shard.pending.back(); e;) {
        object_entry* newer = e->prev;
        if (!e->leased(t)) {
          release(shard, *e);
          ++report.expired_puts;
        }
        e = newer;
      }
      report.reclaimed_removed += reclaim_removed(shard, t);
    }
    expired_puts_total_ += report.expired_puts;
    report.released_segments = pool_.release_held(t);
    report.evicted = evict_above_high_watermark(t);
    report.expired_demotions = ledger_.reservations([&](demotion_reservations& reserved) {
      return reserved.remove_if([&](const auto& r) { return r.deadline <= t; },
                                [&](const auto& r) { pool_.free(single(r.to)); });
    });
    const pool_usage disk = pool_.usage(storage_tier::disk);
    if (static_cast<double>(disk.used) > static_cast<double>(disk.capacity) * options_.disk_high_watermark) {
      auto locks = shards_.lock_all();
      report.disk_evicted = evict_disk(
          t, 0, static_cast<std::uint64_t>(static_cast<double>(disk.capacity) * options_.disk_low_watermark));
    }
    return report;
  }

  service_stats stats() const {
    service_stats s;
    s.disks_away = ledger_.away();
    for (auto& shard_ptr : shards_.all()) {
      std::lock_guard lock(shard_ptr->mu);
      s.objects += shard_ptr->committed();
      s.disk_only_objects += shard_ptr->disk_lru.size();
      s.pending_puts += shard_ptr->pending.size();
      s.removed_leased += shard_ptr->removed.size();
    }
    s.nodes = nodes_.size();
    s.pool = pool_.usage();
    s.disk = pool_.usage(storage_tier::disk);
    s.pending_demotions = ledger_.reservations([](const demotion_reservations& r) { return r.size(); });
    s.demoted_total = demoted_total_;
    s.memory_released_total = memory_released_total_;
    s.demotions_dropped_total = demotions_dropped_total_;
    s.disk_evicted_total = disk_evicted_total_;
    s.evicted_total = evicted_total_;
    s.expired_puts_total = expired_puts_total_;
    s.dead_nodes_total = dead_nodes_total_;
    return s;
  }

  // ------------------------------------------------------------ replication
  // The whole replicated state as journal records (nodes, segments, objects,
  // removed objects still held), under every lock. `at_cut()` runs while the
  // locks are held: a journal position read there separates what the
  // snapshot holds from the records that follow it.
  template <class Emit, class AtCut>
  void snapshot(Emit&& emit, AtCut&& at_cut) const {
    nodes_.locked([&](const node_table::map& nodes) {
      auto locks = shards_.lock_all();
      at_cut();
      emit_state(nodes, pool_, shards_, emit);
    });
  }

  // Rebuilding a copied state in a new, not yet shared service (a follower
  // that takes over, replica_state::promote). Leases the previous leader
  // granted are unknown, so every object and removed object is held as if
  // leased for max_lease_ttl: none of that memory is reused before any such
  // lease has run out. Pending puts get a fresh put_timeout.
  bool restore_node(node_id node, bool expires) {
    if (node == 0) return false;
    nodes_.enroll(node, now(), expires, [] {});
    return true;
  }

  // A segment the old leader held back from allocation (a remount) is held
  // again for a whole max_lease_ttl: how much of its hold was left is unknown.
  bool restore_segment(const segment_descriptor& d, bool held) {
    std::optional<time_point> until;
    if (held) until = now() + options_.max_lease_ttl;
    if (d.tier == storage_tier::disk) ledger_.disk_mounted();
    return d.id != 0 && pool_.mount(d.node, d.size, d.endpoints, d.id, until, d.tier) == d.id;
  }

  // False (nothing changed) if the key is taken or the replicas' space is
  // not free on mounted segments.
  bool restore_object(std::string_view key, std::uint64_t size, version_t version, const replica_list& replicas,
                      bool committed, node_id writer) {
    if (replicas.empty() || key.empty()) return false;
    const hashed_key hk = shard_set::hashed(key);
    object_shard& shard = shards_.shard_for(hk);
    std::lock_guard lock(shard.mu);
    if (shard.find(hk) || !pool_.claim(replicas)) return false;
    object_entry& e = shard.insert_pending(hk);
    e.size = size;
    e.version = version;
    e.replicas = replicas;
    e.writer = writer;
    e.deadline = now() + options_.put_timeout;
    if (committed) {
      shard.commit(e, lru_clock_.fetch_add(1));
      e.deadline = now() + options_.max_lease_ttl;
      shard.set_residence(e, residence_of(pool_.tiers(replicas)));
    }
    return true;
  }

  bool restore_removed(version_t version, const replica_list& replicas) {
    if (replicas.empty() || !pool_.claim(replicas)) return false;
    // Any shard: removed memory is only waited on and freed.
    object_shard& shard = shards_.at(version);
    std::lock_guard lock(shard.mu);
    shard.removed.push_back({version, replicas, now() + options_.max_lease_ttl});
    return true;
  }

  // For tests: meta::check_invariants (invariants.hpp) under every lock.
  // Empty string when all is well, else what is wrong.
  std::string check_invariants() const {
    auto locks = shards_.lock_all();
    return meta::check_invariants(pool_, shards_, ledger_);
  }

 private:
  put_start_result reserve_one(object_shard& shard, const hashed_key& key, std::uint64_t size, std::size_t copies,
                               node_id writer, time_point t) {
    if (size == 0) return {errc::invalid_argument, no_version, {}};
    if (object_entry* e = shard.find(key)) {
      if (e->committed) return {errc::already_exists, no_version, {}};
      if (e->leased(t)) return {errc::put_in_progress, no_version, {}};
      release(shard, *e);  // an expired reservation: the writer gave up
      ++expired_puts_total_;
    }
    put_start_result r;
    r.status = pool_.allocate(size, copies, r.replicas);
    if (r.status != errc::success) return r;
    object_entry& e = shard.insert_pending(key);
    e.size = size;
    e.version = r.version = next_version_.fetch_add(1);
    for (auto& replica : r.replicas) replica.epoch = r.version;  // unique with the segment
    e.replicas = r.replicas;
    e.deadline = t + options_.put_timeout;
    e.writer = writer;
    recorder_.object(journal_kind::object_reserved, e);
    return r;
  }

  // Within nodes_.locked(): a node that mounts is registered (expiring) if
  // it was not.
  void add_node(node_table::map& nodes, node_id node) {
    if (node_table::add_if_absent(nodes, node, now())) recorder_.node_registered(node, true);
  }

  // Under the nodes lock, once a node left or was declared dead: its
  // segments are listed and dropped there, so that a segment it mounts
  // after registering again is not dropped with the old ones.
  void drop_node(node_id node) {
    recorder_.node_left(node);
    drop_segments(pool_.segments_of(node), node);
  }

  std::atomic<version_t> next_version_;
  std::atomic<std::uint64_t> lru_clock_{1};
  std::atomic<std::uint64_t> dead_nodes_total_{0};
  std::atomic<std::uint64_t> demoted_total_{0};
  node_table nodes_;
};

}  // namespace corokv::meta
