#pragma once
// Memory the store owns and reads into when the caller passes no buffers:
// `batch_get(keys, query_results)` returns, per key, a buffer_handle that
// owns the bytes read. The pool is one mapped region, registered with every
// lane like a caller's region (an RDMA lane reads straight into it), carved
// by an offset_allocator (see there for why that allocator).
//
// A handle is move-only; it frees its range when destroyed or released. It
// keeps the pool's memory mapped, so a handle is valid after the operation
// that made it and while the store runs other operations. Destroy handles
// before the store: a handle outliving its store still owns readable bytes,
// but the lanes' registrations of the region (which device transports need
// to reuse it) end with the store.
//
// Thread-safe: one mutex around the allocator, taken once per batch to
// allocate and once per handle to free.

#include <corokv/error.hpp>
#include <corokv/memory/local_segment.hpp>
#include <corokv/memory/offset_allocator.hpp>

#include <boost/asio/buffer.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <system_error>
#include <utility>

namespace corokv::memory {

namespace detail {

struct pool_core {
  pool_core(std::uint64_t size, bool populate) : memory(size, populate), allocator(memory.valid() ? size : 0) {}
  local_segment memory;
  std::mutex mu;
  offset_allocator allocator;
};

}  // namespace detail

class buffer_handle {
 public:
  buffer_handle() noexcept = default;
  buffer_handle(buffer_handle&& other) noexcept
      : core_(std::move(other.core_)), range_(std::exchange(other.range_, {})), size_(std::exchange(other.size_, 0)) {}
  buffer_handle& operator=(buffer_handle&& other) noexcept {
    if (this != &other) {
      release();
      core_ = std::move(other.core_);
      range_ = std::exchange(other.range_, {});
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  buffer_handle(const buffer_handle&) = delete;
  buffer_handle& operator=(const buffer_handle&) = delete;
  ~buffer_handle() { release(); }

  // The bytes read (size() of them; the range behind them may be larger).
  std::byte* data() const noexcept { return core_ ? core_->memory.data() + range_.offset : nullptr; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  explicit operator bool() const noexcept { return core_ != nullptr; }
  std::span<std::byte> bytes() const noexcept { return {data(), size_}; }
  boost::asio::mutable_buffer buffer() const noexcept { return {data(), size_}; }

  // Gives the memory back to the pool now; the handle is empty afterwards.
  void release() noexcept {
    if (!core_) return;
    {
      std::lock_guard lock(core_->mu);
      core_->allocator.free(range_);
    }
    core_.reset();
    range_ = {};
    size_ = 0;
  }

 private:
  friend class buffer_pool;
  buffer_handle(std::shared_ptr<detail::pool_core> core, offset_allocator::allocation range, std::size_t size) noexcept
      : core_(std::move(core)), range_(range), size_(size) {}

  std::shared_ptr<detail::pool_core> core_;
  offset_allocator::allocation range_;
  std::size_t size_ = 0;
};

class buffer_pool {
 public:
  // `size` bytes of anonymous memory (0: no pool; every allocation fails).
  explicit buffer_pool(std::uint64_t size, bool populate = false)
      : core_(size ? std::make_shared<detail::pool_core>(size, populate) : nullptr) {}

  bool valid() const noexcept { return core_ && core_->memory.valid(); }
  std::error_code error() const noexcept { return core_ ? core_->memory.error() : std::error_code{}; }
  // The whole region, for registering it with the lanes.
  boost::asio::mutable_buffer region() const noexcept {
    return valid() ? boost::asio::mutable_buffer(core_->memory.data(), core_->memory.size())
                   : boost::asio::mutable_buffer();
  }
  std::uint64_t capacity() const noexcept { return valid() ? core_->allocator.capacity() : 0; }
  std::uint64_t used() const {
    if (!valid()) return 0;
    std::lock_guard lock(core_->mu);
    return core_->allocator.used();
  }

  // A handle of sizes[i] bytes into out[i] for each non-zero size, under one
  // lock; a size that does not fit now leaves out[i] empty. Returns how many
  // did not fit.
  std::size_t allocate(std::span<const std::uint64_t> sizes, std::span<buffer_handle> out) {
    std::size_t failed = 0;
    for (auto& h : out) h.release();  // before the lock: a held range may be this pool's
    if (!valid()) {
      for (auto s : sizes) failed += s != 0;
      return failed;
    }
    std::lock_guard lock(core_->mu);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] == 0) continue;
      auto range = core_->allocator.allocate(sizes[i]);
      if (!range) {
        ++failed;
        continue;
      }
      out[i] = buffer_handle(core_, *range, static_cast<std::size_t>(sizes[i]));
    }
    return failed;
  }

  buffer_handle allocate(std::uint64_t size) {
    buffer_handle out;
    allocate(std::span<const std::uint64_t>(&size, 1), std::span<buffer_handle>(&out, 1));
    return out;
  }

 private:
  std::shared_ptr<detail::pool_core> core_;
};

}  // namespace corokv::memory
