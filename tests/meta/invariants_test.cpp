// meta/invariants.hpp: the space accounting check finds what is wrong.

#include <corokv/meta/invariants.hpp>

#include <doctest/doctest.h>

#include <string>

using namespace corokv;

namespace {

struct parts {
  meta::segment_pool pool{64, 1};
  meta::shard_set shards{2};
  meta::disk_ledger ledger{1};
  segment_id memory = pool.mount(1, 4096, {});

  // A committed object whose replicas the pool allocated (or, if not
  // `allocated`, claims to hold without the pool knowing).
  meta::object_entry& add(const char* k, std::uint64_t size, bool allocated = true) {
    replica_list replicas;
    if (allocated) {
      REQUIRE(pool.allocate(size, 1, replicas) == errc::success);
    } else {
      replica_descriptor r;
      r.node = 1;
      r.segment = memory;
      r.offset = 0;
      r.length = size;
      replicas.push_back(r);
    }
    const auto key = meta::shard_set::hashed(k);
    meta::object_shard& shard = shards.shard_for(key);
    meta::object_entry& e = shard.insert_pending(key);
    e.size = size;
    e.replicas = replicas;
    shard.commit(e, 1);
    return e;
  }
  std::string check() { return meta::check_invariants(pool, shards, ledger); }
};

}  // namespace

TEST_SUITE("invariants") {

TEST_CASE("sound state passes, space no object owns, overlaps and unknown segments are found") {
  parts p;
  CHECK(p.check().empty());
  p.add("a", 128);
  p.add("b", 64);
  CHECK(p.check().empty());

  parts leak;
  replica_list orphan;
  REQUIRE(leak.pool.allocate(64, 1, orphan) == errc::success);
  CHECK(leak.check() == "segment holds space no object owns");

  parts overlap;
  overlap.add("a", 128);
  overlap.add("b", 64, /*allocated=*/false);  // at offset 0, inside a's range
  CHECK(overlap.check().find("overlap") != std::string::npos);

  parts gone;
  gone.add("a", 64);
  meta::object_entry& e = gone.add("b", 64, /*allocated=*/false);
  e.replicas.begin()->segment = 999;  // a segment the pool does not have
  CHECK(gone.check().find("not mounted") != std::string::npos);
}

TEST_CASE("an object listed under the wrong residence is found") {
  parts p;
  meta::object_entry& e = p.add("a", 64);
  CHECK(p.check().empty());
  e.where = meta::residence::disk;  // its one replica is in memory
  CHECK(p.check() == "residence wrong for a");
}

}  // TEST_SUITE
