#pragma once
// Regions of the caller's memory registered with a store, so that lanes
// which must prepare memory before moving bytes through it (an RDMA device
// pins and registers it) do so once per region instead of once per batch.
//
// A region is registered with every lane at once; each lane may keep a
// lane_registration for it (a memory region handle, keys). Unregistering
// removes the region from the registry at once, so no new operation finds
// it; an operation that already looked it up holds it, and the lanes'
// registrations are destroyed (an RDMA lane deregisters) only when the last
// such operation let go.
//
// Thread-safe: lookups take a shared lock, changes an exclusive one.

#include <corokv/error.hpp>

#include <boost/asio/buffer.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <vector>

namespace corokv::memory {

// What one lane keeps for one registered region; its destructor undoes the
// registration.
struct lane_registration {
  virtual ~lane_registration() = default;
};

class registered_region {
 public:
  registered_region(std::byte* data, std::size_t size, std::size_t lanes) : data_(data), size_(size), by_lane_(lanes) {}

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool contains(const void* p, std::size_t n) const noexcept {
    const auto* b = static_cast<const std::byte*>(p);
    return b >= data_ && n <= size_ && b - data_ <= static_cast<std::ptrdiff_t>(size_ - n);
  }
  // What lane `lane` (its position in the router) keeps for this region.
  const lane_registration* registration(std::size_t lane) const noexcept {
    return lane < by_lane_.size() ? by_lane_[lane].get() : nullptr;
  }

 private:
  friend class region_registry;
  std::byte* data_;
  std::size_t size_;
  std::vector<std::unique_ptr<lane_registration>> by_lane_;
};

class region_registry {
 public:
  using region_ptr = std::shared_ptr<const registered_region>;
  // Registers a region with one lane: what the lane keeps (may be null), or
  // why it cannot.
  using lane_registrar =
      std::function<std::error_code(std::size_t lane, registered_region& region, std::unique_ptr<lane_registration>& out)>;

  explicit region_registry(std::size_t lanes = 0) : lanes_(lanes) {}

  // invalid_argument for an empty region or one that overlaps a registered
  // region; a lane's own error if one refuses (the others' registrations are
  // undone then).
  std::error_code add(boost::asio::mutable_buffer region, const lane_registrar& register_with_lane) {
    if (region.size() == 0) return errc::invalid_argument;
    auto made = std::make_shared<registered_region>(static_cast<std::byte*>(region.data()), region.size(), lanes_);
    std::unique_lock lock(mu_);
    auto at = std::upper_bound(regions_.begin(), regions_.end(), made->data(),
                               [](const std::byte* p, const region_ptr& r) { return p < r->data(); });
    if (at != regions_.end() && (*at)->data() < made->data() + made->size()) return errc::invalid_argument;
    if (at != regions_.begin()) {
      const auto& before = *std::prev(at);
      if (before->data() + before->size() > made->data()) return errc::invalid_argument;
    }
    // Under the lock, so that two overlapping registrations cannot both pass.
    for (std::size_t lane = 0; lane < lanes_; ++lane)
      if (register_with_lane)
        if (std::error_code ec = register_with_lane(lane, *made, made->by_lane_[lane])) return ec;
    regions_.insert(at, std::move(made));
    return {};
  }

  // invalid_argument unless exactly this region is registered.
  std::error_code remove(boost::asio::mutable_buffer region) {
    region_ptr gone;  // released after the lock: it may run lane deregistrations
    std::unique_lock lock(mu_);
    auto at = std::find_if(regions_.begin(), regions_.end(), [&](const region_ptr& r) {
      return r->data() == region.data() && r->size() == region.size();
    });
    if (at == regions_.end()) return errc::invalid_argument;
    gone = std::move(*at);
    regions_.erase(at);
    lock.unlock();
    return {};
  }

  std::size_t size() const {
    std::shared_lock lock(mu_);
    return regions_.size();
  }
  bool empty() const { return size() == 0; }

  // The registered region holding [p, p + n), or null.
  region_ptr find(const void* p, std::size_t n) const {
    std::shared_lock lock(mu_);
    return find_locked(p, n);
  }

  // Runs f(find) under one shared lock, where find(p, n) is as above: a
  // batch looks up all its buffers with one lock.
  template <class F>
  decltype(auto) with_regions(F&& f) const {
    std::shared_lock lock(mu_);
    auto find = [this](const void* p, std::size_t n) -> const region_ptr* { return find_ref(p, n); };
    return f(find);
  }

 private:
  const region_ptr* find_ref(const void* p, std::size_t n) const {
    const auto* b = static_cast<const std::byte*>(p);
    auto at = std::upper_bound(regions_.begin(), regions_.end(), b,
                               [](const std::byte* q, const region_ptr& r) { return q < r->data(); });
    if (at == regions_.begin()) return nullptr;
    const region_ptr& r = *std::prev(at);
    return r->contains(p, n) ? &r : nullptr;
  }
  region_ptr find_locked(const void* p, std::size_t n) const {
    const region_ptr* r = find_ref(p, n);
    return r ? *r : nullptr;
  }

  std::size_t lanes_;
  mutable std::shared_mutex mu_;
  std::vector<region_ptr> regions_;  // by address
};

}  // namespace corokv::memory
