#pragma once
// The RDMA lane's registration of a region of the store's memory: the
// region in memory regions no larger than the device's largest, and the
// local key of a buffer that lies in one of them. Kept apart from the lane
// so that what a registered region holds reads on its own.

#include <corokv/io/verbs.hpp>
#include <corokv/memory/registered_region.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::transport {

// What the RDMA lane keeps for a registered region: its memory regions.
class rdma_registration final : public memory::lane_registration {
 public:
  struct piece {
    std::byte* base = nullptr;
    std::size_t size = 0;
    io::verbs::mr_ptr mr;
  };
  // The local key for [p, p + n), if it lies in one piece; 0 and false if not.
  bool find(const void* p, std::size_t n, std::uint32_t& lkey) const noexcept {
    const auto* b = static_cast<const std::byte*>(p);
    for (const piece& x : pieces)
      if (b >= x.base && n <= x.size && static_cast<std::size_t>(b - x.base) <= x.size - n) {
        lkey = x.mr->lkey;
        return true;
      }
    return false;
  }
  std::vector<piece> pieces;
};

// Registers [region.data(), + region.size()) with the protection domain, in
// pieces of at most max_mr_size bytes; `out` is set only if all of them are.
inline std::error_code register_rdma_region(ibv_pd* pd, std::uint64_t max_mr_size, memory::registered_region& region,
                                            std::unique_ptr<memory::lane_registration>& out) {
  auto made = std::make_unique<rdma_registration>();
  const std::size_t piece = static_cast<std::size_t>(std::max<std::uint64_t>(1, max_mr_size));
  for (std::size_t at = 0; at < region.size(); at += piece) {
    const std::size_t n = std::min(piece, region.size() - at);
    io::verbs::mr_ptr mr(ibv_reg_mr(pd, region.data() + at, n, IBV_ACCESS_LOCAL_WRITE));
    if (!mr) return io::verbs::last_error();
    made->pieces.push_back({region.data() + at, n, std::move(mr)});
  }
  out = std::move(made);
  return {};
}

}  // namespace corokv::transport
