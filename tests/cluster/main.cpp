// The process tests' main: doctest, plus the child modes some tests start
// this same binary in (a process the test can kill at a chosen moment).
// The tests of suite "disk_tier" need a corokv-node with the disk tier: the
// build says whether it has one (COROKV_NODE_HAS_DISK_TIER); without it they
// are skipped, and a run of only them exits 77 (skipped, in ctest and meson).
#define DOCTEST_CONFIG_IMPLEMENT
#include "../support/doctest_main.hpp"

#include <cstdint>
#include <string>

int stalled_writer_main(const std::string& host, std::uint16_t port, const std::string& key, std::uint64_t size);
int cancel_storm_main(const std::string& host, std::uint16_t port, int seconds, int threads, int calls,
                      const std::string& prefix, const std::string& dead_prefix, int dead_keys);

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "--corokv-child=stalled-writer")
    return stalled_writer_main(argv[2], static_cast<std::uint16_t>(std::stoul(argv[3])), argv[4], std::stoull(argv[5]));
  if (argc == 10 && std::string(argv[1]) == "--corokv-child=cancel-storm")
    return cancel_storm_main(argv[2], static_cast<std::uint16_t>(std::stoul(argv[3])), std::stoi(argv[4]),
                             std::stoi(argv[5]), std::stoi(argv[6]), argv[7], argv[8], std::stoi(argv[9]));
  return corokv::test::run_tests_without(argc, argv, COROKV_NODE_HAS_DISK_TIER != 0, "disk_tier",
                                         "corokv-node was built without the disk tier (io_uring is off)");
}
