#pragma once
// One batch call from Python: the arguments it owns while the store works
// (keys, the caller's buffers held through the buffer protocol, query
// results), the store's answer, and how the caller learns that it is done
// (a flag a waiting thread blocks on, or a completion queue an event
// loop drains).
//
// Who may drop what: Python buffers must be released with the GIL held, and
// the I/O thread never takes the GIL. So the I/O thread never holds the last
// reference to an operation: a waiting thread holds one until it wakes, and
// a queued operation is owned by its queue until a Python thread drains it.

#include "python_types.hpp"

#include <corokv/client/options.hpp>
#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/system/error_code.hpp>

#include <pybind11/pybind11.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::python {

namespace asio = boost::asio;

// A Py_buffer held for as long as the store may touch its memory. Released
// with the GIL held (see above).
class held_buffer {
 public:
  held_buffer() = default;
  held_buffer(const held_buffer&) = delete;
  held_buffer& operator=(const held_buffer&) = delete;
  held_buffer(held_buffer&& o) noexcept : view_(o.view_), held_(std::exchange(o.held_, false)) {}
  ~held_buffer() {
    if (held_) PyBuffer_Release(&view_);
  }

  // False if `object` exports no C-contiguous buffer (or no writable one),
  // or one of Python objects (a numpy array of dtype object: its bytes are
  // references, which bytes from the store would turn into wild pointers);
  // the Python error that explains why is cleared: the caller reports the
  // key as invalid_argument.
  bool acquire(PyObject* object, bool writable) {
    const int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, &view_, flags) != 0) {
      PyErr_Clear();
      return false;
    }
    // Only an item at least pointer-sized can hold an object reference (a
    // struct dtype may have one among other fields); only then is the
    // format asked for: numpy builds it per export, which cost a tenth of
    // a 64-row batch of uint8 rows.
    if (view_.itemsize >= static_cast<Py_ssize_t>(sizeof(PyObject*))) {
      PyBuffer_Release(&view_);
      if (PyObject_GetBuffer(object, &view_, flags | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        return false;
      }
      if (holds_python_objects(view_.format)) {
        PyBuffer_Release(&view_);
        return false;
      }
    }
    held_ = true;
    return true;
  }
  // Whether a buffer format (struct syntax; field names between colons)
  // has an 'O' item: a Python object reference.
  static bool holds_python_objects(const char* format) noexcept {
    if (!format) return false;  // "B"
    bool in_name = false;
    for (const char* p = format; *p; ++p) {
      if (*p == ':')
        in_name = !in_name;
      else if (!in_name && *p == 'O')
        return true;
    }
    return false;
  }
  std::byte* data() const noexcept { return static_cast<std::byte*>(view_.buf); }
  std::size_t size() const noexcept { return static_cast<std::size_t>(view_.len); }

 private:
  Py_buffer view_{};
  bool held_ = false;
};

// The memory regions registered through one store, by start address: an
// (address, size) pair is accepted only inside one of them. A region
// registered from a Python object holds that object's buffer (a bytearray
// cannot be resized meanwhile); an operation that uses it holds it too, so
// unregistering cannot free memory a batch still writes.
class region_table {
 public:
  struct region {
    std::size_t size = 0;
    std::shared_ptr<held_buffer> pin;  // null for a region given by address
  };

  bool insert(std::uintptr_t start, region r) {
    std::lock_guard lock(mu_);
    return regions_.emplace(start, std::move(r)).second;
  }
  // The region that starts at `start`, taken out of the table.
  std::optional<region> erase(std::uintptr_t start) {
    std::lock_guard lock(mu_);
    auto it = regions_.find(start);
    if (it == regions_.end()) return std::nullopt;
    region r = std::move(it->second);
    regions_.erase(it);
    return r;
  }
  std::optional<std::size_t> size_of(std::uintptr_t start) const {
    std::lock_guard lock(mu_);
    auto it = regions_.find(start);
    if (it == regions_.end()) return std::nullopt;
    return it->second.size;
  }
  // Whether [address, address + size) lies in one region; its pin if so.
  bool covers(std::uintptr_t address, std::size_t size, std::shared_ptr<held_buffer>& pin) const {
    std::lock_guard lock(mu_);
    auto it = regions_.upper_bound(address);
    if (it == regions_.begin()) return false;
    --it;
    const std::uintptr_t end = it->first + it->second.size;
    if (address < it->first || address > end || size > end - address) return false;
    pin = it->second.pin;
    return true;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return regions_.size();
  }
  std::map<std::uintptr_t, region> take_all() {
    std::lock_guard lock(mu_);
    return std::exchange(regions_, {});
  }

 private:
  mutable std::mutex mu_;
  std::map<std::uintptr_t, region> regions_;
};

// How a waiting thread learns that its operation completed. Setting it
// costs no system call unless the waiter is already asleep (a read the
// store finished in its initiating call sets it before anyone waits). Held
// by shared_ptr: the setter keeps it alive through set(), while the waiter
// may drop the operation as soon as it sees it set.
class completion_flag {
 public:
  void set() {
    if (state_.exchange(done, std::memory_order_acq_rel) == sleeping) {
      std::lock_guard lock(mu_);
      woken_.notify_one();
    }
  }
  void wait() {
    if (state_.load(std::memory_order_acquire) == done) return;
    std::unique_lock lock(mu_);
    int expected = pending;
    if (!state_.compare_exchange_strong(expected, sleeping, std::memory_order_acq_rel)) return;  // done meanwhile
    woken_.wait(lock, [&] { return state_.load(std::memory_order_acquire) == done; });
  }
  // wait(), for at most `limit`; whether it was set.
  template <class Duration>
  bool wait_for(Duration limit) {
    if (state_.load(std::memory_order_acquire) == done) return true;
    std::unique_lock lock(mu_);
    int expected = pending;
    if (!state_.compare_exchange_strong(expected, sleeping, std::memory_order_acq_rel)) return true;
    return woken_.wait_for(lock, limit, [&] { return state_.load(std::memory_order_acquire) == done; });
  }

 private:
  static constexpr int pending = 0, done = 1, sleeping = 2;
  std::atomic<int> state_{pending};
  std::mutex mu_;
  std::condition_variable woken_;
};

class completion_queue;

// Cancellation state, apart from the operation: the posted request that
// emits it may outlive the operation, and must not own Python objects.
struct cancel_state {
  asio::cancellation_signal signal;
  // Set where the operation completes: on the I/O thread, or on the caller's
  // thread for a batch whose every key was refused before the store saw it.
  std::atomic<bool> finished{false};
};

// The arguments and completion of any batch operation; the store's answer
// is in the typed_operation of its entry (store_operations.hpp), which
// sets python_result.
struct operation {
  operation() = default;
  operation(const operation&) = delete;
  operation& operator=(const operation&) = delete;
  virtual ~operation() = default;

  std::uint64_t ticket = 0;

  // ---- arguments
  // The keys, as views of the caller's str (their cached UTF-8) and bytes
  // objects, which key_refs keeps alive: no key is copied.
  std::vector<std::string_view> keys;
  std::vector<py::object> key_refs;
  // Keys the binding refused before the store saw them (a buffer it could
  // not use): empty if none; else per key, success for keys sent.
  std::vector<errc> refused;
  std::vector<std::string_view> sent_keys;  // the keys sent, when some were refused
  std::vector<held_buffer> buffers;
  std::vector<std::shared_ptr<held_buffer>> pins;
  std::vector<asio::const_buffer> values;
  std::vector<asio::mutable_buffer> destinations;
  std::vector<query_result> given;
  bool use_given = false;
  client::get_options get_opts;
  put_options put_opts;

  // ---- outcome
  boost::system::error_code ec;  // a failure of the whole operation
  // The store's answer as Python's result (with the GIL; once, as it may
  // move what the answer owns).
  py::object (*python_result)(operation&) = nullptr;

  // ---- completion
  std::shared_ptr<completion_flag> done = std::make_shared<completion_flag>();
  completion_queue* queue = nullptr;  // owned by the store, outlives its operations
  std::shared_ptr<cancel_state> cancel;

  key_span sent() const noexcept { return refused.empty() ? key_span(keys) : key_span(sent_keys); }
  bool any_sent() const noexcept { return refused.empty() ? true : !sent_keys.empty(); }

  // Marks key i as not sent, with `why`.
  void refuse(std::size_t i, errc why) {
    if (refused.empty()) refused.assign(keys.size(), errc::success);
    refused[i] = why;
  }
  // After the arguments are in: the sub-batch of keys that were not refused.
  // Per-key arguments are appended for every key, so those of refused keys
  // are dropped here.
  void compact() {
    if (refused.empty()) return;
    std::size_t kept = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (refused[i] != errc::success) continue;
      sent_keys.emplace_back(keys[i]);
      if (!values.empty()) values[kept] = values[i];
      if (!destinations.empty()) destinations[kept] = destinations[i];
      if (use_given) given[kept] = given[i];
      ++kept;
    }
    if (!values.empty()) values.resize(kept);
    if (!destinations.empty()) destinations.resize(kept);
    if (use_given) given.resize(kept);
  }
};

// Where operations of an event loop land: an eventfd that is readable while
// completions wait, and the completions. Pushed by the I/O thread (no GIL),
// drained by a Python thread.
class completion_queue {
 public:
  completion_queue() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  completion_queue(const completion_queue&) = delete;
  completion_queue& operator=(const completion_queue&) = delete;
  ~completion_queue() { ::close(fd_); }

  int fd() const noexcept { return fd_; }

  void push(std::shared_ptr<operation> op) {
    std::lock_guard lock(mu_);
    ready_.push_back(std::move(op));
    if (ready_.size() == 1) signal();
  }

  // Every completion waiting, oldest first; the eventfd is reset.
  std::vector<std::shared_ptr<operation>> take() {
    std::lock_guard lock(mu_);
    std::uint64_t ignored;
    // EAGAIN: nothing was signalled since the last take (an empty drain).
    (void)!::read(fd_, &ignored, sizeof ignored);
    return std::exchange(ready_, {});
  }

 private:
  void signal() {
    const std::uint64_t one = 1;
    // Cannot fail short of a counter overflow (2^64 - 1 unread signals);
    // the queue would still be drained at the next signal.
    (void)!::write(fd_, &one, sizeof one);
  }

  int fd_;
  std::mutex mu_;
  std::vector<std::shared_ptr<operation>> ready_;
};

}  // namespace corokv::python
