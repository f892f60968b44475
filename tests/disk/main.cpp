// corokv_disk_tests: the parts of the disk tier that need io_uring. Where
// io_uring is refused here (kernel.io_uring_disabled, seccomp) the binary
// says so and exits 77, which ctest and meson count as skipped. The disk
// tier's pure parts (io_plan, tier_index, crc32c) are in corokv_tests and
// run everywhere.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <liburing.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  io_uring ring;
  if (const int r = io_uring_queue_init(2, &ring, 0); r < 0) {
    std::printf("disk tests: io_uring unavailable here (%s): skipped\n", std::strerror(-r));
    return 77;
  }
  io_uring_queue_exit(&ring);
  doctest::Context context(argc, argv);
  return context.run();
}
