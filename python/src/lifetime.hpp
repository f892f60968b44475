#pragma once
// The stores and interpreter exit.
//
// At exit CPython runs the atexit callbacks, then starts finalizing, and from
// then on a daemon thread that takes the GIL back is stopped where it is: on
// Python 3.11 by pthread_exit, whose unwinding aborts the process
// ("terminate called without an active exception") when it meets a noexcept
// frame, such as pybind11's gil_scoped_release destructor where a store call
// takes the GIL back; the frames it does unwind drop Python objects without
// the GIL. So no thread may be inside the binding when finalization starts.
//
// Every entry into the binding (a method, a constructor, a store's
// destructor) is a call_scope. The module's atexit hook (exit_coordinator::
// at_exit, registered at import: it runs after hooks registered later, which
// may still use their stores) marks the interpreter exiting, closes every
// live store (new calls refused, submitted operations cancelled), waits
// without the GIL for the calls in flight to finish and the stores' I/O
// threads to be joined, and then for every scope that began before it to
// end. A scope that begins after it is not counted and never releases the
// GIL: by then calls are refused, constructors refuse, and a destructor
// finds its store torn down (or tears it down holding the GIL: a store being
// destroyed has no callers that could need the GIL).

#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <vector>

namespace corokv::python {

namespace py = pybind11;

// A store, as the exit hook sees it.
class exit_participant {
 public:
  // With the GIL: later calls are refused, submitted operations cancelled.
  virtual void refuse_new_calls() = 0;
  // Without the GIL: waits for the operations in flight, destroys the store,
  // joins its I/O thread. Idempotent.
  virtual void tear_down() = 0;

 protected:
  ~exit_participant() = default;
};

class exit_coordinator {
 public:
  bool exiting() const noexcept { return exiting_.load(std::memory_order_acquire); }

  // With the GIL, as a store's construction ends. False once the
  // interpreter is exiting: the store is not kept.
  bool add(exit_participant* s) {
    std::lock_guard lock(mu_);
    if (exiting()) return false;
    live_.push_back(s);
    return true;
  }
  // With the GIL, as a store is destroyed. If the hook is tearing it down,
  // waits for that (keeping the GIL: the tear-down needs no Python thread).
  void remove(exit_participant* s) {
    std::unique_lock lock(mu_);
    live_.erase(std::remove(live_.begin(), live_.end(), s), live_.end());
    changed_.wait(lock, [&] { return busy_ != s; });
  }

  // With the GIL. True if counted (the interpreter was not exiting yet).
  bool enter() {
    if (exiting_.load(std::memory_order_relaxed)) return false;  // the GIL orders this with at_exit
    calls_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  void leave() {
    if (calls_.fetch_sub(1, std::memory_order_acq_rel) == 1 && exiting()) {
      std::lock_guard lock(mu_);
      changed_.notify_all();
    }
  }

  // The atexit hook, called with the GIL.
  void at_exit() {
    std::vector<exit_participant*> stores;
    {
      std::lock_guard lock(mu_);
      exiting_.store(true, std::memory_order_seq_cst);
      stores = live_;
    }
    for (exit_participant* s : stores) s->refuse_new_calls();
    py::gil_scoped_release nogil;  // the exiting thread: never stopped, needs no counting
    std::unique_lock lock(mu_);
    for (exit_participant* s : stores) {
      if (std::find(live_.begin(), live_.end(), s) == live_.end()) continue;  // destroyed meanwhile
      busy_ = s;
      lock.unlock();
      s->tear_down();
      lock.lock();
      busy_ = nullptr;
      changed_.notify_all();
    }
    changed_.wait(lock, [&] { return calls_.load(std::memory_order_acquire) == 0; });
  }

 private:
  std::atomic<bool> exiting_{false};
  std::atomic<std::size_t> calls_{0};
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<exit_participant*> live_;
  exit_participant* busy_ = nullptr;
};

// Defined in module.cpp.
exit_coordinator& exit_guard();

// The threads inside a counted scope: only they release the GIL.
inline thread_local int counted_scopes = 0;

// One entry into the binding, from a Python thread holding the GIL.
class call_scope {
 public:
  call_scope() : counted_(exit_guard().enter()) {
    if (counted_) ++counted_scopes;
  }
  call_scope(const call_scope&) = delete;
  call_scope& operator=(const call_scope&) = delete;
  ~call_scope() {
    if (!counted_) return;
    --counted_scopes;
    exit_guard().leave();
  }

 private:
  bool counted_;
};

// Releases the GIL for a wait, inside a counted scope (the exit hook waits
// for it); after the hook has run, keeps it (see above).
class without_gil {
 public:
  without_gil() {
    if (counted_scopes > 0) state_ = PyEval_SaveThread();
  }
  without_gil(const without_gil&) = delete;
  without_gil& operator=(const without_gil&) = delete;
  ~without_gil() {
    if (state_) PyEval_RestoreThread(state_);
  }

 private:
  PyThreadState* state_ = nullptr;
};

}  // namespace corokv::python
