// The disk tier's file: created at its size, kept on reopen, locked
// against a second user, O_DIRECT where the file system takes it.

#include <corokv/disk/disk_file.hpp>

#include "../support/scratch_dir.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

using namespace corokv;

TEST_SUITE("disk") {

TEST_CASE("disk file: created at its size, kept on reopen, locked against a second user, refused at another size") {
  test::scratch_dir s(test::disk_backed_tmp);
  const auto path = s.path / "tier";
  std::error_code ec;
  {
    auto f = disk::disk_file::open(path, 1 << 20, ec);
    REQUIRE_FALSE(ec);
    CHECK(f.valid());
    CHECK_FALSE(f.existed());
    CHECK(std::filesystem::file_size(path) == 1 << 20);
    CHECK(f.direct());  // /var/tmp is on a disk file system here
    const int w = ::open(path.c_str(), O_WRONLY);
    REQUIRE(::pwrite(w, "keep", 4, 0) == 4);
    ::close(w);
    auto second = disk::disk_file::open(path, 1 << 20, ec);
    CHECK(ec == std::error_code(EAGAIN, std::system_category()));
  }
  auto again = disk::disk_file::open(path, 1 << 20, ec);
  REQUIRE_FALSE(ec);
  CHECK(again.existed());
  char head[4];
  const int r = ::open(path.c_str(), O_RDONLY);
  REQUIRE(::pread(r, head, 4, 0) == 4);
  ::close(r);
  CHECK(std::string(head, 4) == "keep");
  again = {};
  disk::disk_file::open(path, 2 << 20, ec);
  CHECK(ec == std::errc::invalid_argument);
  disk::disk_file::open(s.path / "odd", 1000, ec);
  CHECK(ec == std::errc::invalid_argument);
  auto buffered = disk::disk_file::open(s.path / "buffered", 1 << 20, ec, /*try_direct=*/false);
  REQUIRE_FALSE(ec);
  CHECK_FALSE(buffered.direct());
  CHECK_FALSE(buffered.buffered_reason().empty());
}

}  // TEST_SUITE
