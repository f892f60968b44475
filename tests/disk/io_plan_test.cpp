// The O_DIRECT plan of the disk tier, without I/O: which transfers go
// straight to memory, which through bounce blocks, and what is refused.
// No io_uring: these run in corokv_tests wherever it builds.

#include <corokv/disk/io_plan.hpp>

#include <doctest/doctest.h>

using namespace corokv;

TEST_SUITE("disk") {

TEST_CASE("io plan: aligned transfers go straight to memory, partial tail blocks through one bounce block") {
  disk::io_plan plan;
  const disk::io_extent x[] = {{0, 3 * 4096, 0x10000}, {8192 * 4, 4096 + 100, 0x20000}};
  plan.build(x, disk::io_plan::direction::read, /*direct=*/true);
  REQUIRE(plan.pieces().size() == 3);
  CHECK(plan.pieces()[0].bounce == false);
  CHECK(plan.pieces()[0].length == 3 * 4096);
  CHECK(plan.pieces()[1].bounce == false);
  CHECK(plan.pieces()[1].length == 4096);
  CHECK(plan.pieces()[2].bounce == true);
  CHECK(plan.pieces()[2].file_offset == 8192 * 4 + 4096);
  CHECK(plan.pieces()[2].length == 4096);
  REQUIRE(plan.copies().size() == 1);
  CHECK(plan.copies()[0].caller_offset == 4096);
  CHECK(plan.copies()[0].length == 100);
  CHECK(plan.bounce_bytes() == 4096);
}

TEST_CASE("io plan: unaligned memory or offsets go whole through bounce memory over the blocks they touch") {
  disk::io_plan plan;
  const disk::io_extent x[] = {{4096, 5000, 0x10001}, {100, 50, 0x20000}};
  plan.build(x, disk::io_plan::direction::read, true);
  REQUIRE(plan.pieces().size() == 2);
  CHECK(plan.pieces()[0].bounce);
  CHECK(plan.pieces()[0].file_offset == 4096);
  CHECK(plan.pieces()[0].length == 8192);
  CHECK(plan.pieces()[1].file_offset == 0);
  CHECK(plan.pieces()[1].length == 4096);
  CHECK(plan.pieces()[1].memory_offset == 8192);  // after the first one's blocks
  REQUIRE(plan.copies().size() == 2);
  CHECK(plan.copies()[1].bounce_offset == 8192 + 100);
  CHECK(plan.bounce_bytes() == 3 * 4096);
  for (auto& p : plan.pieces()) CHECK(p.memory_offset % disk::block_size == 0);
}

TEST_CASE("io plan: O_DIRECT writes must start on a block, buffered files take ranges as they are, split at max_piece") {
  disk::io_plan plan;
  const disk::io_extent x[] = {{100, 50, 0x10000}, {0, 0, 0x10000}, {4096, 20000, 0x20000}};
  plan.build(x, disk::io_plan::direction::write, true);
  CHECK(plan.status()[0] == errc::invalid_argument);
  CHECK(plan.status()[1] == errc::invalid_argument);
  CHECK(plan.status()[2] == errc::success);
  for (auto& p : plan.pieces()) CHECK(p.transfer == 2);

  plan.build(x, disk::io_plan::direction::write, /*direct=*/false, /*max_piece=*/8192);
  CHECK(plan.status()[0] == errc::success);
  CHECK(plan.bounce_bytes() == 0);
  REQUIRE(plan.pieces().size() == 4);  // 50 bytes; 20000 in 8192 + 8192 + 3616
  CHECK(plan.pieces()[0].length == 50);
  CHECK(plan.pieces()[3].length == 20000 - 2 * 8192);
  CHECK(plan.pieces()[3].memory_offset == 2 * 8192);
}

}  // TEST_SUITE
