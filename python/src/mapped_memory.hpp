#pragma once
// Whether a range of addresses is memory this process can read and write,
// by /proc/self/maps. register_buffer(address, size) checks it: an address
// the store would copy to or from is otherwise only the caller's word, and
// a wrong one is a segfault in the store's thread. (The caller must still
// keep the memory mapped while it is registered.)

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace corokv::python {

// In `maps` (the text of /proc/<pid>/maps: "lo-hi perms ..." lines in
// address order), whether [start, start + size) lies in mappings that are
// readable and writable, with no gap.
inline bool covers_read_write(std::string_view maps, std::uintptr_t start, std::size_t size) {
  if (size == 0 || start + size < start) return false;
  const std::uintptr_t end = start + size;
  std::uintptr_t need = start;
  while (!maps.empty()) {
    const std::size_t eol = maps.find('\n');
    std::string_view line = maps.substr(0, eol);
    maps = eol == std::string_view::npos ? std::string_view{} : maps.substr(eol + 1);
    const std::size_t dash = line.find('-');
    const std::size_t space = line.find(' ');
    if (dash == std::string_view::npos || space == std::string_view::npos || dash > space || line.size() < space + 3)
      continue;
    std::uintptr_t lo = 0, hi = 0;
    try {
      lo = std::stoull(std::string(line.substr(0, dash)), nullptr, 16);
      hi = std::stoull(std::string(line.substr(dash + 1, space - dash - 1)), nullptr, 16);
    } catch (...) {
      continue;  // not a mapping line
    }
    if (hi <= need) continue;
    if (lo > need) return false;  // a hole
    if (line[space + 1] != 'r' || line[space + 2] != 'w') return false;
    need = hi;
    if (need >= end) return true;
  }
  return false;
}

inline bool mapped_read_write(std::uintptr_t start, std::size_t size) {
  std::ifstream in("/proc/self/maps");
  if (!in) return false;
  const std::string maps((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return covers_read_write(maps, start, size);
}

}  // namespace corokv::python
