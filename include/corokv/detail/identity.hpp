#pragma once
// Who we are: this host (for same-host transports) and fresh random ids.

#include <cstdint>
#include <fstream>
#include <random>
#include <string>

namespace corokv::detail {

// Identifies this host for same-host transports (the kernel's boot id).
inline std::string host_id() {
  std::string id;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> id;
  return id;
}

// A random nonzero 64-bit id, for node ids and proposed segment ids.
inline std::uint64_t random_id() {
  std::random_device rd;
  std::uint64_t id = 0;
  while (id == 0) id = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return id;
}

}  // namespace corokv::detail
