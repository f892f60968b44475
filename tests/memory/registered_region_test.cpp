// Registered regions: overlap refused, lookups, unregistering that waits for
// its users, a lane that refuses undoing the registration.

#include <corokv/memory/registered_region.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

using namespace corokv;
using namespace corokv::memory;

namespace {

struct counted_registration : lane_registration {
  explicit counted_registration(int& counter) : live(counter) { ++live; }
  ~counted_registration() override { --live; }
  int& live;
};

}  // namespace

TEST_CASE("registered regions: overlap is refused, lookups find the region, unregistering waits for its users") {
  int live = 0;
  region_registry regions(2);
  auto registrar = [&](std::size_t lane, registered_region&, std::unique_ptr<lane_registration>& out) {
    if (lane == 1) out = std::make_unique<counted_registration>(live);  // lane 0 keeps nothing
    return std::error_code{};
  };
  std::vector<std::byte> memory(1 << 16);
  CHECK_FALSE(regions.add(boost::asio::buffer(memory.data(), 4096), registrar));
  CHECK(live == 1);
  CHECK(regions.add(boost::asio::buffer(memory.data() + 4000, 100), registrar) == errc::invalid_argument);
  CHECK(regions.add(boost::asio::mutable_buffer(), registrar) == errc::invalid_argument);
  CHECK_FALSE(regions.add(boost::asio::buffer(memory.data() + 8192, 4096), registrar));
  CHECK(regions.size() == 2);

  auto found = regions.find(memory.data() + 100, 200);
  REQUIRE(found);
  CHECK(found->data() == memory.data());
  CHECK(found->registration(0) == nullptr);
  CHECK(found->registration(1) != nullptr);
  CHECK_FALSE(regions.find(memory.data() + 4090, 10));  // crosses the region's end
  CHECK_FALSE(regions.find(memory.data() + 5000, 10));  // between the regions

  // Unregistered while "an operation" holds it: gone for new lookups, the
  // lane's registration lives until the holder lets go.
  CHECK_FALSE(regions.remove(boost::asio::buffer(memory.data(), 4096)));
  CHECK_FALSE(regions.find(memory.data() + 100, 200));
  CHECK(live == 2);
  found.reset();
  CHECK(live == 1);
  CHECK(regions.remove(boost::asio::buffer(memory.data(), 4096)) == errc::invalid_argument);
}

TEST_CASE("registered regions: a lane that refuses undoes the registration") {
  int live = 0;
  region_registry regions(2);
  std::vector<std::byte> memory(4096);
  auto refuse_second = [&](std::size_t lane, registered_region&, std::unique_ptr<lane_registration>& out) {
    if (lane == 0) {
      out = std::make_unique<counted_registration>(live);
      return std::error_code{};
    }
    return std::error_code(errc::transfer_failed);
  };
  CHECK(regions.add(boost::asio::buffer(memory), refuse_second) == errc::transfer_failed);
  CHECK(live == 0);
  CHECK(regions.empty());
}
