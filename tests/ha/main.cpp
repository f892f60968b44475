// The HA tests' main: doctest, and the skip rule for the tests that need a
// real etcd (test suite "etcd"). Without etcd they are excluded and, if
// nothing else was selected (ctest's ha.etcd), the run exits 77, which
// ctest and meson count as skipped rather than passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include "../doctest_main.hpp"

#include <cstdio>
#include <string>

// In etcd_test.cpp, which holds the Asio code: this file stays cheap to compile.
bool etcd_available(std::string& executable);

int main(int argc, char** argv) {
  std::string executable;
  if (etcd_available(executable)) return corokv::test::run_tests(argc, argv);
  std::fprintf(stderr, "etcd not found at %s (set COROKV_ETCD): the real-etcd tests are skipped\n",
               executable.c_str());
  doctest::Context context(argc, argv);
  context.addFilter("test-suite-exclude", "etcd");
  const int status = context.run();
  if (status != 0 || context.shouldExit()) return status;
  using listener = corokv::test::selection_listener;
  if (listener::ran && listener::selected == 0) return 77;
  return status;
}
