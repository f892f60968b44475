#pragma once
// A doubly-linked list threaded through T's own prev/next pointers: front is
// the newest, back the oldest. No allocation; an element is in at most one
// such list at a time.

#include <cstddef>

namespace corokv::detail {

template <class T>
class intrusive_list {
 public:
  T* front() const noexcept { return head_; }
  T* back() const noexcept { return tail_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  void push_front(T* e) noexcept {
    e->prev = nullptr;
    e->next = head_;
    if (head_) head_->prev = e;
    head_ = e;
    if (!tail_) tail_ = e;
    ++size_;
  }
  void unlink(T* e) noexcept {
    (e->prev ? e->prev->next : head_) = e->next;
    (e->next ? e->next->prev : tail_) = e->prev;
    e->prev = e->next = nullptr;
    --size_;
  }
  void move_to_front(T* e) noexcept {
    if (head_ == e) return;
    unlink(e);
    push_front(e);
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace corokv::detail
