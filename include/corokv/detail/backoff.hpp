#pragma once
// How long a loop that reconnects or retries waits after a failure, without
// I/O: bounded exponential backoff with jitter.
//
// The n-th failure in a row waits a delay drawn uniformly from
// [(1 - jitter) * d, d], where d = min(max, initial * 2^(n-1)). The floor
// bounds the rate of attempts (never more than one per (1 - jitter) *
// initial, and one per (1 - jitter) * max once failures persist); the
// spread keeps many clients that failed together (a master gone, etcd
// restarted) from coming back in step. A success starts the count afresh.
//
// What counts as a success is the caller's: a connection counts only once
// the other end answered on it, since one that a follower or a fenced
// master closes unanswered is as much a failure as a refused connect.

#include <corokv/types.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace corokv::detail {

struct backoff_options {
  duration initial = std::chrono::milliseconds(20);
  duration max = std::chrono::seconds(1);
  double jitter = 0.5;  // the share of each delay drawn at random, 0 to 1
};

class backoff {
 public:
  // `seed` makes the jitter reproducible (tests); callers that run in many
  // processes should pass something that differs between them.
  explicit backoff(backoff_options options = {}, std::uint64_t seed = 0)
      : options_(sane(options)), state_(seed ^ 0x9e3779b97f4a7c15ull) {}

  // A failure: the wait before the next attempt.
  duration next() {
    const duration ceiling = this->ceiling();
    if (failures_ < 64) ++failures_;
    const double spread = options_.jitter * unit();
    const auto delay = std::chrono::duration_cast<duration>(ceiling * (1.0 - spread));
    ++waits_;
    total_ += delay;
    return delay;
  }

  // The attempt worked: the next failure waits `initial` again.
  void reset() noexcept { failures_ = 0; }

  // The longest the next failure may wait.
  duration ceiling() const noexcept {
    duration d = options_.initial;
    for (std::uint32_t i = 0; i < failures_ && d < options_.max; ++i) d *= 2;
    return std::min(d, options_.max);
  }
  // The shortest any wait is: attempts never come faster than one per this.
  duration floor() const noexcept {
    return std::chrono::duration_cast<duration>(options_.initial * (1.0 - options_.jitter));
  }

  std::uint32_t failures() const noexcept { return failures_; }  // in a row
  std::uint64_t waits() const noexcept { return waits_; }        // delays handed out
  duration total() const noexcept { return total_; }             // their sum
  const backoff_options& options() const noexcept { return options_; }

 private:
  static backoff_options sane(backoff_options o) {
    o.initial = std::max(o.initial, duration(1));
    o.max = std::max(o.max, o.initial);
    o.jitter = std::clamp(o.jitter, 0.0, 1.0);
    return o;
  }

  // splitmix64: uniform in [0, 1).
  double unit() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  }

  backoff_options options_;
  std::uint64_t state_;
  std::uint32_t failures_ = 0;
  std::uint64_t waits_ = 0;
  duration total_{};
};

}  // namespace corokv::detail
