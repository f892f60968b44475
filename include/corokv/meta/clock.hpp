#pragma once
// The metadata service reads time through a clock_source so that tests can
// drive it by hand; production uses the steady clock.

#include <corokv/types.hpp>

#include <atomic>
#include <functional>

namespace corokv::meta {

using clock_source = std::function<time_point()>;

inline clock_source steady_clock_source() {
  return [] { return clock_type::now(); };
}

// A clock that moves only when told to. Safe to read from many threads.
class manual_clock {
 public:
  explicit manual_clock(time_point start = time_point{} + std::chrono::hours(1))
      : rep_(start.time_since_epoch().count()) {}

  time_point now() const noexcept { return time_point(duration(rep_.load(std::memory_order_acquire))); }
  void advance(duration d) noexcept { rep_.fetch_add(d.count(), std::memory_order_acq_rel); }

  // A clock_source reading this clock; the clock must outlive it.
  clock_source source() const {
    return [this] { return now(); };
  }

 private:
  std::atomic<duration::rep> rep_;
};

}  // namespace corokv::meta
