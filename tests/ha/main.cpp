// The HA tests' main: doctest, and the skip rule for the tests that need a
// real etcd (test suite "etcd"). Without etcd they are excluded and, if
// nothing else was selected (ctest's ha.etcd), the run exits 77, which
// ctest and meson count as skipped rather than passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include "../support/doctest_main.hpp"

#include <cstdio>
#include <string>

// In etcd_test.cpp, which holds the Asio code: this file stays cheap to compile.
bool etcd_available(std::string& executable);

int main(int argc, char** argv) {
  std::string executable;
  const bool available = etcd_available(executable);
  const std::string why = "etcd not found at " + executable + " (set COROKV_ETCD)";
  return corokv::test::run_tests_without(argc, argv, available, "etcd", why.c_str());
}
