#pragma once
// The service's state as journal records (journal.hpp): each change as it
// is made (journal_recorder), and the whole state at once for a follower's
// snapshot (emit_state).

#include <corokv/meta/journal.hpp>
#include <corokv/meta/node_table.hpp>
#include <corokv/meta/object_entry.hpp>
#include <corokv/meta/segment_pool.hpp>
#include <corokv/meta/shard_set.hpp>
#include <corokv/types.hpp>

#include <span>

namespace corokv::meta {

// Writes the service's changes to its journal, if it has one.
class journal_recorder {
 public:
  // Every later change is also written to `j`, which must outlive the
  // recorder or be replaced first; nullptr stops recording.
  void set(journal* j) noexcept { journal_ = j; }

  template <class F>
  void record(F&& fill) {
    if (!journal_) return;
    journal_record r;
    fill(r);
    journal_->record(r);
  }

  void object(journal_kind kind, const object_entry& e) {
    record([&](journal_record& r) { describe_object(e, r); r.kind = kind; });
  }

  void node_registered(node_id node, bool expires) {
    record([&](journal_record& r) {
      r.kind = journal_kind::node_registered;
      r.node = node;
      r.expires = expires;
    });
  }

  void node_left(node_id node) {
    record([&](journal_record& r) {
      r.kind = journal_kind::node_left;
      r.node = node;
    });
  }

  void segment_mounted(const segment_descriptor& d, bool held) {
    record([&](journal_record& r) {
      r.kind = journal_kind::segment_mounted;
      r.segment = d;
      r.held = held;
    });
  }

  void segments_dropped(std::span<const segment_id> segments, node_id writer) {
    record([&](journal_record& r) {
      r.kind = journal_kind::segments_dropped;
      r.segments = segments;
      r.node = writer;
    });
  }

  void removed_reclaimed(version_t version) {
    record([&](journal_record& r) {
      r.kind = journal_kind::removed_reclaimed;
      r.version = version;
    });
  }

  // An object's fields as its records carry them (the kind is the caller's).
  static void describe_object(const object_entry& e, journal_record& r) {
    r.key = e.key();
    r.size = e.size;
    r.version = e.version;
    r.replicas = e.replicas;
    r.node = e.writer;
  }

 private:
  journal* journal_ = nullptr;
};

// The whole replicated state as records, in an order a new service can
// apply: nodes, segments, objects (reserved, then committed if they are),
// removed objects still held. The caller holds the nodes lock and every
// shard's lock.
template <class Emit>
void emit_state(const node_table::map& nodes, const segment_pool& pool, const shard_set& shards, Emit&& emit) {
  journal_record r;
  for (auto& [id, state] : nodes) {
    r = {};
    r.kind = journal_kind::node_registered;
    r.node = id;
    r.expires = state.expires;
    emit(r);
  }
  for (auto& d : pool.descriptors()) {
    r = {};
    r.kind = journal_kind::segment_mounted;
    r.segment = d;
    r.held = pool.held(d.id);
    emit(r);
  }
  for (auto& shard : shards.all()) {
    shard->objects.for_each([&](const object_entry& e) {
      r = {};
      r.kind = journal_kind::object_reserved;
      journal_recorder::describe_object(e, r);
      emit(r);
      if (!e.committed) return;
      r.kind = journal_kind::object_committed;
      emit(r);
    });
    for (auto& z : shard->removed) {
      r = {};
      r.kind = journal_kind::object_removed;  // no key: it names no object any more
      r.version = z.version;
      r.replicas = z.replicas;
      emit(r);
    }
  }
}

}  // namespace corokv::meta
