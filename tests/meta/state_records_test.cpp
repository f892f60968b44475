// meta/state_records.hpp: the service's changes and whole state as journal
// records.

#include <corokv/meta/state_records.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace corokv;

namespace {

// What a record said, kept beyond record() (its views die with the call).
struct kept {
  meta::journal_kind kind;
  node_id node;
  std::string key;
  std::uint64_t size;
  version_t version;
  std::size_t replicas;
  std::vector<segment_id> segments;
};

struct recording_journal : meta::journal {
  std::vector<kept> records;
  void record(const meta::journal_record& r) override {
    records.push_back({r.kind, r.node, std::string(r.key), r.size, r.version, r.replicas.size(),
                       std::vector<segment_id>(r.segments.begin(), r.segments.end())});
  }
};

replica_descriptor replica_on(segment_id s, std::uint64_t offset, std::uint64_t length) {
  replica_descriptor r;
  r.node = 1;
  r.segment = s;
  r.offset = offset;
  r.length = length;
  return r;
}

}  // namespace

TEST_SUITE("state_records") {

TEST_CASE("the recorder writes each change with the fields its kind names, and nothing without a journal") {
  meta::journal_recorder recorder;
  meta::shard_set shards(1);
  const auto key = meta::shard_set::hashed("object");
  meta::object_entry& e = shards.at(0).insert_pending(key);
  e.size = 100;
  e.version = 42;
  e.writer = 9;
  e.replicas.push_back(replica_on(3, 0, 100));
  recorder.object(meta::journal_kind::object_reserved, e);  // no journal: nothing, no crash

  recording_journal journal;
  recorder.set(&journal);
  recorder.object(meta::journal_kind::object_committed, e);
  recorder.node_registered(5, false);
  recorder.node_left(5);
  const segment_id dropped[] = {3, 4};
  recorder.segments_dropped(dropped, 9);
  recorder.removed_reclaimed(41);
  REQUIRE(journal.records.size() == 5);
  const kept& o = journal.records[0];
  CHECK(o.kind == meta::journal_kind::object_committed);
  CHECK(o.key == "object");
  CHECK(o.size == 100);
  CHECK(o.version == 42);
  CHECK(o.node == 9);
  CHECK(o.replicas == 1);
  CHECK(journal.records[1].kind == meta::journal_kind::node_registered);
  CHECK(journal.records[2].kind == meta::journal_kind::node_left);
  CHECK(journal.records[3].segments == std::vector<segment_id>{3, 4});
  CHECK(journal.records[3].node == 9);
  CHECK(journal.records[4].version == 41);
  recorder.set(nullptr);
  recorder.node_left(6);
  CHECK(journal.records.size() == 5);
}

TEST_CASE("the whole state: nodes, then segments, then objects (reserved, and committed if they are), then removed ones") {
  meta::node_table::map nodes;
  nodes[7] = {};
  meta::segment_pool pool(64, 1);
  const segment_id seg = pool.mount(7, 4096, {});
  REQUIRE(seg != 0);
  meta::shard_set shards(2);
  auto add = [&](const char* k, version_t v, bool committed) {
    const auto key = meta::shard_set::hashed(k);
    meta::object_shard& shard = shards.shard_for(key);
    meta::object_entry& e = shard.insert_pending(key);
    e.version = v;
    e.size = 64;
    e.replicas.push_back(replica_on(seg, v * 64, 64));
    if (committed) shard.commit(e, v);
  };
  add("done", 1, true);
  add("pending", 2, false);
  shards.at(0).removed.push_back({3, {}, {}});
  std::vector<kept> out;
  recording_journal sink;
  meta::emit_state(nodes, pool, shards, [&](const meta::journal_record& r) { sink.record(r); });
  out = sink.records;
  REQUIRE(out.size() == 6);
  CHECK(out[0].kind == meta::journal_kind::node_registered);
  CHECK(out[0].node == 7);
  CHECK(out[1].kind == meta::journal_kind::segment_mounted);
  int reserved = 0, committed = 0, removed = 0;
  std::string committed_key;
  for (std::size_t i = 2; i < out.size(); ++i) {
    reserved += out[i].kind == meta::journal_kind::object_reserved;
    removed += out[i].kind == meta::journal_kind::object_removed;
    if (out[i].kind == meta::journal_kind::object_committed) {
      ++committed;
      committed_key = out[i].key;
      CHECK(out[i - 1].kind == meta::journal_kind::object_reserved);  // right after its reservation
      CHECK(out[i - 1].key == out[i].key);
    }
  }
  CHECK(reserved == 2);
  CHECK(committed == 1);
  CHECK(committed_key == "done");
  CHECK(removed == 1);
}

}  // TEST_SUITE
