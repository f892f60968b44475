#pragma once
// A driver for the sans-I/O plans (client/read_plan.hpp, put_plan.hpp,
// demotion_plan.hpp): it runs a plan once with every step succeeding,
// counts the steps it took, and then runs it again once per step k and per
// kind of fault, with step k failing -- its I/O answers with an error, or
// the caller cancels when the plan is about to name it. A check judges each
// run: the plan finished, every key has a sensible status, and nothing was
// left behind (leases, reservations, disk extents).
//
// The test gives the driving: a function that runs the plan from start to
// done and asks the step_failure it is handed, at each step, whether the
// caller has cancelled by now and whether this step fails.
//
//   test::fail_each_step([](test::step_failure& f) { ...; return outcome; },
//                        [](const outcome& o, const test::step_failure& f) { CHECK(...); },
//                        {test::step_fault::error, test::step_fault::cancelled});

#include <doctest/doctest.h>

#include <cstddef>
#include <initializer_list>
#include <limits>

namespace corokv::test {

enum class step_fault {
  error,      // the step's I/O completes with an error as a whole
  cancelled,  // the caller cancels before the plan names the step, and stays cancelled
};

class step_failure {
 public:
  static constexpr std::size_t no_step = std::numeric_limits<std::size_t>::max();

  step_failure(std::size_t failing_step, step_fault how, std::size_t most_steps)
      : at_(failing_step), how_(how), most_steps_(most_steps) {}

  // Asked before the plan is asked for its next step: whether the caller
  // has cancelled by now (from the failing step on, under `cancelled`).
  bool cancelled() {
    const bool c = how_ == step_fault::cancelled && taken_ >= at_;
    if (c) injected_ = true;
    return c;
  }
  // Asked once per step the plan names, before it is answered: whether this
  // step's I/O fails (under `error`). Counts the step; a plan that takes
  // more than most_steps steps ends the test: it would never finish.
  bool fails() {
    REQUIRE_MESSAGE(taken_ < most_steps_, "the plan did not finish within " << most_steps_ << " steps");
    const bool f = how_ == step_fault::error && taken_ == at_;
    if (f) injected_ = true;
    ++taken_;
    return f;
  }

  std::size_t failing_step() const noexcept { return at_; }
  step_fault how() const noexcept { return how_; }
  bool failed_any() const noexcept { return at_ != no_step; }
  // The fault happened: the plan got as far as the failing step.
  bool injected() const noexcept { return injected_; }
  std::size_t steps_taken() const noexcept { return taken_; }

 private:
  std::size_t at_;
  step_fault how_;
  std::size_t most_steps_;
  std::size_t taken_ = 0;
  bool injected_ = false;
};

// Runs `drive` with no fault, then once per step it took and per fault in
// `faults`, that step failing so; `check(outcome, failure)` after each run.
// Returns the number of steps of the run without a fault.
template <class Drive, class Check>
std::size_t fail_each_step(Drive&& drive, Check&& check, std::initializer_list<step_fault> faults,
                           std::size_t most_steps = 64) {
  step_failure clean(step_failure::no_step, step_fault::error, most_steps);
  const auto outcome = drive(clean);
  const std::size_t steps = clean.steps_taken();
  REQUIRE(steps > 0);
  check(outcome, clean);
  for (const step_fault how : faults) {
    for (std::size_t k = 0; k < steps; ++k) {
      CAPTURE(k);
      CAPTURE(static_cast<int>(how));
      step_failure failure(k, how, most_steps);
      const auto failed = drive(failure);
      REQUIRE(failure.injected());
      check(failed, failure);
    }
  }
  return steps;
}

}  // namespace corokv::test
