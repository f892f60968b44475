#pragma once
// Per-batch scratch that outlives one batch: a batch takes an object, uses
// its vectors (which keep their capacity) and gives it back, so a steady
// stream of batches allocates nothing for its bookkeeping. A coroutine may
// resume on another thread, so the scratch cannot be thread-local; a few
// slots taken and returned with one atomic exchange each serve as many
// batches as run at once, and a batch that finds every slot taken makes a
// fresh object (and gives it back, or frees it if the slots are full).

#include <array>
#include <atomic>
#include <memory>
#include <utility>

namespace corokv::detail {

template <class T, std::size_t Slots = 4>
class scratch_pool {
 public:
  scratch_pool() = default;
  scratch_pool(const scratch_pool&) = delete;
  scratch_pool& operator=(const scratch_pool&) = delete;
  ~scratch_pool() {
    for (auto& slot : slots_) delete slot.exchange(nullptr);
  }

  // Gives the object back on destruction.
  class lease {
   public:
    lease(scratch_pool& pool, T* item) noexcept : pool_(&pool), item_(item) {}
    lease(lease&& other) noexcept : pool_(other.pool_), item_(std::exchange(other.item_, nullptr)) {}
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    lease& operator=(lease&& other) noexcept {
      if (this != &other) {
        if (item_) pool_->give_back(item_);
        pool_ = other.pool_;
        item_ = std::exchange(other.item_, nullptr);
      }
      return *this;
    }
    ~lease() {
      if (item_) pool_->give_back(item_);
    }
    T& operator*() const noexcept { return *item_; }
    T* operator->() const noexcept { return item_; }

   private:
    scratch_pool* pool_;
    T* item_;
  };

  lease take() {
    for (auto& slot : slots_)
      if (T* item = slot.exchange(nullptr, std::memory_order_acquire)) return lease(*this, item);
    return lease(*this, new T());
  }

 private:
  void give_back(T* item) noexcept {
    for (auto& slot : slots_) {
      T* empty = nullptr;
      if (slot.compare_exchange_strong(empty, item, std::memory_order_release, std::memory_order_relaxed)) return;
    }
    delete item;
  }

  std::array<std::atomic<T*>, Slots> slots_{};
};

}  // namespace corokv::detail
