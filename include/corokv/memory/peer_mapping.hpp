#pragma once
// Another process's shareable segment (local_segment, segment_memory::
// shareable), mapped into this one so that its replicas are read and written
// by memcpy, with no socket in between.
//
// The owner announces its segment as /proc/<pid>/fd/<fd>. Before mapping,
// the descriptor opened there is checked to be the memfd named after the
// segment id and at least the segment's size: if the owner died and its pid
// and descriptor number were reused, the open fails or the check does, and
// the segment is simply not reachable this way.

#include <corokv/memory/local_segment.hpp>
#include <corokv/types.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <string>

namespace corokv::memory {

class peer_mapping {
 public:
  // nullptr if the segment cannot be mapped from here.
  static std::shared_ptr<peer_mapping> open(const segment_descriptor& d) {
    const std::string& path = d.endpoints.shm_name;
    if (path.empty() || d.size == 0) return nullptr;
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return nullptr;
    std::shared_ptr<peer_mapping> out;
    if (is_segment_memfd(fd, d)) {
      void* p = ::mmap(nullptr, d.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) out.reset(new peer_mapping(static_cast<std::byte*>(p), d.size));
    }
    ::close(fd);  // the mapping keeps the memory
    return out;
  }

  peer_mapping(const peer_mapping&) = delete;
  peer_mapping& operator=(const peer_mapping&) = delete;
  ~peer_mapping() { ::munmap(data_, size_); }

  std::byte* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }

 private:
  peer_mapping(std::byte* data, std::uint64_t size) : data_(data), size_(size) {}

  static bool is_segment_memfd(int fd, const segment_descriptor& d) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < d.size) return false;
    char target[256];
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(self.c_str(), target, sizeof target - 1);
    if (n <= 0) return false;
    const std::string expected = "/memfd:" + local_segment::memfd_name(d.id) + " ";
    return std::string(target, static_cast<std::size_t>(n)).rfind(expected, 0) == 0;
  }

  std::byte* data_;
  std::uint64_t size_;
};

}  // namespace corokv::memory
