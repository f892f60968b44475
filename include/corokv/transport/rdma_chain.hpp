#pragma once
// The decisions of one RDMA transfer to one peer, without a device: how its
// requests become work requests (one each, or several for a request longer
// than the port's largest message), which go out together as a chain, which
// work request of a chain is signalled, when send-queue slots come free,
// and each request's status once the completions are in. The RDMA lane
// (rdma_lane.hpp) posts what this says and feeds back what the completion
// queue says; tests/transport/rdma_chain_test.cpp drives it by hand.
//
// What it relies on, from the verbs rules for a reliable-connected queue
// pair: work requests complete in the order they were posted; a signalled
// one completing means every earlier one completed; an unsignalled one
// makes a completion only if it fails; once one fails the queue pair is in
// error and every later one completes as flushed. So the last work request
// of every chain makes exactly one completion, success or not, and that
// completion ends the chain and frees its slots.

#include <corokv/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace corokv::transport {

// One work request: `length` bytes at `offset` into request `request`'s
// range (the same offset in the local buffer and in the remote range).
struct rdma_work {
  std::uint32_t request = 0;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
};

enum class rdma_completion : std::uint8_t {
  success,
  flushed,  // the queue pair was in error: never executed
  failed,   // executed and failed (remote access, retries exhausted, ...)
};

class rdma_chain_plan {
 public:
  // A chain to post: works [first, first + count), the last one signalled.
  struct chain {
    std::size_t first = 0;
    std::size_t count = 0;
  };

  // lengths[k]: bytes of request k. max_message: the port's largest
  // message. max_chain: at most this many work requests per chain, so that
  // slots come back while a long batch is still being posted.
  void reset(std::span<const std::uint64_t> lengths, std::uint64_t max_message, std::uint32_t max_chain) {
    works_.clear();
    chain_length_.clear();
    status_.assign(lengths.size(), errc::success);
    const std::uint64_t piece = std::max<std::uint64_t>(1, std::min<std::uint64_t>(max_message, UINT32_MAX));
    for (std::size_t k = 0; k < lengths.size(); ++k)
      for (std::uint64_t at = 0; at < lengths[k]; at += piece)
        works_.push_back({static_cast<std::uint32_t>(k), at, static_cast<std::uint32_t>(std::min(piece, lengths[k] - at))});
    chain_length_.assign(works_.size(), 0);
    max_chain_ = std::max<std::uint32_t>(1, max_chain);
    next_ = 0;
    confirmed_ = 0;
    chains_in_flight_ = 0;
    stopped_ = false;
    stop_reason_ = errc::success;
  }

  std::span<const rdma_work> works() const noexcept { return works_; }
  std::span<const errc> statuses() const noexcept { return status_; }
  std::size_t chains_in_flight() const noexcept { return chains_in_flight_; }
  bool stopped() const noexcept { return stopped_; }
  // Works left to post (and the plan not stopped).
  bool has_unposted() const noexcept { return !stopped_ && next_ < works_.size(); }
  // Nothing left to post (or stopped) and no chain in flight.
  bool finished() const noexcept { return (stopped_ || next_ == works_.size()) && chains_in_flight_ == 0; }

  // The next chain, given `room` free send-queue slots; count 0 if there is
  // nothing to post, no room, or the plan stopped. The caller posts it.
  chain next(std::size_t room) {
    if (stopped_ || next_ == works_.size() || room == 0) return {};
    const std::size_t count = std::min({room, static_cast<std::size_t>(max_chain_), works_.size() - next_});
    const chain c{next_, count};
    chain_length_[next_ + count - 1] = static_cast<std::uint32_t>(count);
    next_ += count;
    ++chains_in_flight_;
    return c;
  }

  // Whether work w is the signalled last one of its chain.
  bool ends_chain(std::size_t w) const noexcept { return chain_length_[w] != 0; }

  // A completion for work w. Returns the send-queue slots it frees (its
  // chain's length if it ends the chain, else 0). A failure stops the plan:
  // the queue pair is in error, so nothing more is posted to it.
  std::size_t complete(std::size_t w, rdma_completion c) {
    if (c != rdma_completion::success) {
      errc& s = status_[works_[w].request];
      if (s == errc::success) s = c == rdma_completion::flushed && stop_reason_ != errc::success ? stop_reason_ : errc::transfer_failed;
      if (!stopped_) stop(errc::transfer_failed);
    }
    if (!ends_chain(w)) return 0;
    confirmed_ = std::max(confirmed_, w + 1);  // in order: everything up to w is done
    --chains_in_flight_;
    return chain_length_[w];
  }

  // ibv_post_send took only the first `posted` works of `chain` (the rest,
  // and the chain's signalled end, were refused): the chain now ends at its
  // last posted work, which completes (flushed) once the caller has errored
  // the queue pair; the refused works' requests fail, and the plan stops.
  // Returns the send-queue slots the refused works had been counted for.
  std::size_t truncate(chain c, std::size_t posted) {
    const std::size_t refused = c.count - posted;
    for (std::size_t w = c.first + posted; w < c.first + c.count; ++w) {
      chain_length_[w] = 0;
      if (status_[works_[w].request] == errc::success) status_[works_[w].request] = errc::transfer_failed;
    }
    if (posted == 0)
      --chains_in_flight_;
    else
      chain_length_[c.first + posted - 1] = static_cast<std::uint32_t>(posted);
    stop(errc::transfer_failed);
    return refused;
  }

  // Nothing more will complete (the queue pair was destroyed): every request
  // not known to be done ends with `why`, and the plan is finished.
  void abandon(errc why) {
    for (std::size_t w = confirmed_; w < works_.size(); ++w)
      if (status_[works_[w].request] == errc::success) status_[works_[w].request] = why;
    stopped_ = true;
    if (stop_reason_ == errc::success) stop_reason_ = why;
    chains_in_flight_ = 0;
  }

  // No more chains: requests with works not yet posted end with `why`.
  // Returns whether chains are still in flight (the caller then moves the
  // queue pair to error, so that they complete as flushed).
  bool stop(errc why) {
    if (!stopped_) {
      stopped_ = true;
      stop_reason_ = why;
      for (std::size_t w = next_; w < works_.size(); ++w)
        if (status_[works_[w].request] == errc::success) status_[works_[w].request] = why;
    }
    return chains_in_flight_ > 0;
  }

 private:
  std::vector<rdma_work> works_;
  std::vector<std::uint32_t> chain_length_;  // per work: its chain's length if it ends one
  std::vector<errc> status_;
  std::uint32_t max_chain_ = 1;
  std::size_t next_ = 0;
  std::size_t confirmed_ = 0;  // works before this are known complete
  std::size_t chains_in_flight_ = 0;
  bool stopped_ = false;
  errc stop_reason_ = errc::success;
};

}  // namespace corokv::transport
