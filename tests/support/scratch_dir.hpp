#pragma once
// A fresh directory per test, removed with everything in it at the end.
// Disk tests ask for one on a disk-backed file system (/var/tmp: O_DIRECT
// is refused by tmpfs); the others take the system's temporary directory.

#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace corokv::test {

// /var/tmp: kept on disk, unlike /tmp on many systems (tmpfs).
inline const std::filesystem::path disk_backed_tmp{"/var/tmp"};

struct scratch_dir {
  std::filesystem::path path;
  explicit scratch_dir(const std::filesystem::path& under = std::filesystem::temp_directory_path()) {
    std::string tmpl = (under / "corokv-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

}  // namespace corokv::test
