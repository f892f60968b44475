#pragma once
// Memory a store contributes to the pool, page-aligned. Private memory is an
// anonymous mapping only this process can reach. Shareable memory is a
// memfd mapped MAP_SHARED: other processes on the host map the same pages
// through /proc/<pid>/fd/<fd> and read or write them by memcpy. A memfd
// needs no name in a shared namespace, so nothing is left behind in
// /dev/shm when the owner is killed: the pages go once the last mapping
// does.
//
// Populated up front by default, so that the first writes into it do not
// stall on page faults; unpopulated, the kernel commits pages as objects
// are written.

#include <corokv/detail/identity.hpp>
#include <corokv/error.hpp>
#include <corokv/types.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

namespace corokv::memory {

enum class segment_memory { private_anonymous, shareable };

class local_segment {
 public:
  // Maps `size` bytes; check valid() / error() afterwards. A shareable
  // segment's memfd is named after `id`, so that a peer can verify it opened
  // the segment it meant to.
  explicit local_segment(std::uint64_t size, bool populate = true,
                         segment_memory kind = segment_memory::private_anonymous, segment_id id = 0)
      : size_(size) {
    int flags = populate ? MAP_POPULATE : MAP_NORESERVE;
    if (kind == segment_memory::shareable) {
      fd_ = ::memfd_create(memfd_name(id).c_str(), MFD_CLOEXEC);
      if (fd_ < 0 || ::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
        fail();
        return;
      }
      flags |= MAP_SHARED;
    } else {
      flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd_, 0);
    if (p == MAP_FAILED) {
      fail();
      return;
    }
    data_ = static_cast<std::byte*>(p);
  }
  local_segment(const local_segment&) = delete;
  local_segment& operator=(const local_segment&) = delete;
  ~local_segment() {
    if (data_) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }

  bool valid() const noexcept { return data_ != nullptr; }
  std::error_code error() const noexcept { return error_; }
  std::byte* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }

  // Where a process on this host opens a shareable segment; empty if private.
  std::string shm_path() const {
    if (fd_ < 0) return {};
    return "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(fd_);
  }

  // What the memory itself tells peers: the host it lives on, its address
  // here, and where a process on the same host opens it (if shareable).
  // Lanes add how else they reach it.
  segment_endpoints endpoints() const {
    segment_endpoints where;
    where.host_id = detail::host_id();
    where.base_address = reinterpret_cast<std::uintptr_t>(data_);
    where.shm_name = shm_path();
    return where;
  }

  // The name the kernel shows for a shareable segment's memfd (readlink of
  // its /proc path gives "/memfd:<name> (deleted)").
  static std::string memfd_name(segment_id id) { return "corokv-segment-" + std::to_string(id); }

 private:
  void fail() {
    error_ = std::error_code(errno, std::system_category());
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    size_ = 0;
  }

  std::byte* data_ = nullptr;
  std::uint64_t size_ = 0;
  int fd_ = -1;
  std::error_code error_;
};

}  // namespace corokv::memory
