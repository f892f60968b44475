#pragma once
// The file a node's disk capacity lives in: created at its full size
// (fallocate: the blocks exist, a full disk fails now and not mid-write),
// opened with O_DIRECT where the file system allows it, and locked so that
// a second process cannot use it at once. An existing file of the asked
// size is kept as it is: its contents are what a warm restart reads back.
//
// O_DIRECT refused (tmpfs, some FUSE file systems): the file is opened
// buffered and why is kept in buffered_reason(), for a log line and the
// metrics; nothing else changes but the page cache's part.

#include <corokv/error.hpp>
#include <corokv/types.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

namespace corokv::disk {

// O_DIRECT's alignment for offsets, lengths and memory (types.hpp: the
// metadata service allocates disk extents in these blocks).
inline constexpr std::uint64_t block_size = disk_block_size;

constexpr std::uint64_t round_up_to_block(std::uint64_t n) noexcept {
  return (n + block_size - 1) / block_size * block_size;
}

class disk_file {
 public:
  disk_file() noexcept = default;
  disk_file(const disk_file&) = delete;
  disk_file& operator=(const disk_file&) = delete;
  disk_file(disk_file&& other) noexcept { swap(other); }
  disk_file& operator=(disk_file&& other) noexcept {
    disk_file moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~disk_file() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Opens `path`, creating it with `size` bytes (a multiple of block_size)
  // if it does not exist. An existing file must have exactly that size
  // (invalid_argument otherwise: resizing would move what its index names).
  // Another process holding it: resource_unavailable_try_again.
  static disk_file open(const std::filesystem::path& path, std::uint64_t size, std::error_code& ec,
                        bool try_direct = true) {
    ec.clear();
    disk_file f;
    if (size == 0 || size % block_size != 0) {
      ec = std::make_error_code(std::errc::invalid_argument);
      return f;
    }
    f.path_ = path;
    f.size_ = size;
    int flags = O_RDWR | O_CREAT | O_CLOEXEC;
    if (try_direct) {
      f.fd_ = ::open(path.c_str(), flags | O_DIRECT, 0600);
      if (f.fd_ >= 0) {
        f.direct_ = true;
      } else if (errno == EINVAL) {
        f.buffered_reason_ = "the file system refused O_DIRECT (EINVAL)";
      } else {
        ec = {errno, std::system_category()};
        return f;
      }
    } else {
      f.buffered_reason_ = "O_DIRECT not asked for";
    }
    if (f.fd_ < 0) f.fd_ = ::open(path.c_str(), flags, 0600);
    if (f.fd_ < 0) {
      ec = {errno, std::system_category()};
      return f;
    }
    if (::flock(f.fd_, LOCK_EX | LOCK_NB) != 0) {
      ec = {errno == EWOULDBLOCK ? EAGAIN : errno, std::system_category()};
      return f;
    }
    struct stat st {};
    if (::fstat(f.fd_, &st) != 0) {
      ec = {errno, std::system_category()};
      return f;
    }
    const auto have = static_cast<std::uint64_t>(st.st_size);
    if (have != 0 && have != size) {
      ec = std::make_error_code(std::errc::invalid_argument);
      return f;
    }
    f.existed_ = have == size;
    if (!f.existed_) {
      const int r = ::posix_fallocate(f.fd_, 0, static_cast<off_t>(size));
      if (r != 0) {
        ec = {r, std::system_category()};
        return f;
      }
    }
    return f;
  }

  bool valid() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }
  std::uint64_t size() const noexcept { return size_; }
  bool direct() const noexcept { return direct_; }
  // Whether the file was there, at its size, before open(): a warm start.
  bool existed() const noexcept { return existed_; }
  const std::string& buffered_reason() const noexcept { return buffered_reason_; }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void swap(disk_file& o) noexcept {
    std::swap(fd_, o.fd_);
    std::swap(size_, o.size_);
    std::swap(direct_, o.direct_);
    std::swap(existed_, o.existed_);
    std::swap(buffered_reason_, o.buffered_reason_);
    std::swap(path_, o.path_);
  }

  int fd_ = -1;
  std::uint64_t size_ = 0;
  bool direct_ = false;
  bool existed_ = false;
  std::string buffered_reason_;
  std::filesystem::path path_;
};

}  // namespace corokv::disk
