#pragma once
// Memory a store contributes to the pool: an anonymous private mapping,
// page-aligned. Populated up front by default, so that the first writes into
// it do not stall on page faults; unpopulated, the kernel commits pages as
// objects are written.

#include <corokv/error.hpp>

#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <utility>

namespace corokv {

class local_segment {
 public:
  // Maps `size` bytes; check valid() / error() afterwards.
  explicit local_segment(std::uint64_t size, bool populate = true) : size_(size) {
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : MAP_NORESERVE);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) {
      error_ = std::error_code(errno, std::system_category());
      size_ = 0;
    } else {
      data_ = static_cast<std::byte*>(p);
    }
  }
  local_segment(const local_segment&) = delete;
  local_segment& operator=(const local_segment&) = delete;
  local_segment(local_segment&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), error_(o.error_) {}
  ~local_segment() {
    if (data_) ::munmap(data_, size_);
  }

  bool valid() const noexcept { return data_ != nullptr; }
  std::error_code error() const noexcept { return error_; }
  std::byte* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }

 private:
  std::byte* data_ = nullptr;
  std::uint64_t size_ = 0;
  std::error_code error_;
};

}  // namespace corokv
