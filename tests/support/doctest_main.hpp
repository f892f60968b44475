#pragma once
// The test binaries' doctest runner. ctest runs each test case as
// `binary --test-case=NAME`; a name the filter cannot express (a ';' splits
// CMake's list, so the case is registered as two halves that match nothing)
// would then run no test case and still exit 0. Here a run whose filters
// select no test case fails instead, so such a case cannot pass unnoticed.

#include <doctest/doctest.h>

#include <cstdio>

namespace corokv::test {

class selection_listener final : public doctest::IReporter {
 public:
  explicit selection_listener(const doctest::ContextOptions&) {}

  static inline bool ran = false;
  static inline unsigned selected = 0;

  void test_run_end(const doctest::TestRunStats& stats) override {
    ran = true;
    selected = stats.numTestCasesPassingFilters;
  }
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

inline int run_tests(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int status = context.run();
  if (status == 0 && selection_listener::ran && selection_listener::selected == 0) {
    std::fprintf(stderr, "no test case matched the filters: nothing was tested\n");
    return 1;
  }
  return status;
}

// The exit status that ctest (SKIP_RETURN_CODE) and meson count as skipped.
inline constexpr int skipped_exit_status = 77;

// A run for a binary some of whose tests need a layer this build or machine
// lacks (io_uring, etcd, an RDMA device): where `available` is false, the
// test suite `suite` is left out and `why` is said; a run that selected
// nothing else (ctest's one case of that suite, meson's test of it) exits
// 77 and is counted as skipped, not as passed.
inline int run_tests_without(int argc, char** argv, bool available, const char* suite, const char* why) {
  if (available) return run_tests(argc, argv);
  std::fprintf(stderr, "%s: the tests of suite \"%s\" are skipped\n", why, suite);
  doctest::Context context(argc, argv);
  context.addFilter("test-suite-exclude", suite);
  const int status = context.run();
  if (status != 0 || context.shouldExit()) return status;
  if (selection_listener::ran && selection_listener::selected == 0) return skipped_exit_status;
  return status;
}

}  // namespace corokv::test

REGISTER_LISTENER("corokv-selection", 1, corokv::test::selection_listener);
