#pragma once
// The disk lane: replicas in disk segments this process holds (rank disk),
// read and written with io_uring (io/uring_queue.hpp) on the executor the
// lane was made with; no thread. A disk segment is a disk_file attached
// under a segment id; a replica's offset is its byte offset in the file.
//
// A batch becomes I/O requests by disk::io_plan: with O_DIRECT, whole
// blocks go straight between the caller's memory and the file where both
// are block-aligned, and the rest through bounce memory: the lane's own
// registered (fixed) buffer when it is free and large enough, else an
// aligned buffer of the batch's own. Buffered files take every range as it
// is.
//
// Cancellation (terminal) cancels the requests in the kernel, and read and
// write return only once each has completed: the caller's buffers are
// untouched afterwards. Requests that finished keep success.

#include <corokv/disk/disk_file.hpp>
#include <corokv/disk/io_plan.hpp>
#include <corokv/error.hpp>
#include <corokv/io/uring_queue.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/net/data_server.hpp>
#include <corokv/transport/lane.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv {

struct disk_lane_options {
  io::uring_options ring;
  std::size_t bounce_bytes = 4u << 20;  // the registered bounce buffer; 0: none
  std::uint64_t max_piece = 8u << 20;   // the longest single request
};

struct disk_lane_stats {
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t direct_pieces = 0;   // straight between the caller's memory and the file
  std::uint64_t bounced_pieces = 0;  // through bounce memory
  std::uint64_t own_bounce_buffers = 0;  // batches that found the registered one taken or too small
  std::uint64_t failed_pieces = 0;
};

class disk_lane {
 public:
  // Costs nothing until a file is attached: the ring and the bounce buffer
  // are set up then, so a store that has no disk tier never needs io_uring.
  explicit disk_lane(boost::asio::any_io_executor ex, disk_lane_options options = {})
      : state_(std::make_shared<state>(std::move(ex), options)) {}

  std::string_view name() const noexcept { return "disk"; }

  // Makes `file` reachable as segment `id`. already_exists if taken; the
  // kernel's error if io_uring is unavailable (ENOSYS without it, EPERM
  // where kernel.io_uring_disabled forbids it): a disk tier never silently
  // becomes something else.
  std::error_code attach(segment_id id, std::shared_ptr<const disk::disk_file> file) {
    if (!file || !file->valid()) return errc::invalid_argument;
    std::unique_lock lock(state_->mu);
    if (state_->files.count(id)) return errc::already_exists;
    if (!state_->queue)
      if (std::error_code ec = open_ring(*state_)) return ec;
    state_->files.emplace(id, std::move(file));
    return {};
  }
  // Batches already running keep the file until they finish.
  void detach(segment_id id) {
    std::unique_lock lock(state_->mu);
    state_->files.erase(id);
  }
  bool attached(segment_id id) const {
    std::shared_lock lock(state_->mu);
    return state_->files.count(id) != 0;
  }

  disk_lane_stats stats() const noexcept {
    const state& s = *state_;
    return {s.bytes_read.load(), s.bytes_written.load(), s.direct_pieces.load(), s.bounced_pieces.load(),
            s.own_bounce_buffers.load(), s.failed_pieces.load()};
  }
  io::uring_stats ring_stats() const {
    std::shared_lock lock(state_->mu);
    return state_->queue ? state_->queue->stats() : io::uring_stats{};
  }
  bool fixed_bounce_buffer() const {
    std::shared_lock lock(state_->mu);
    return state_->bounce_fixed;
  }

  lane_rank rank(const segment_route& where) { return attached(where.id) ? ranks::disk : ranks::unreachable; }

  // For this node's data server (net::data_server::set_range_reader): reads
  // remote readers' ranges of the disk segments attached here.
  net::range_reader range_reader() const {
    std::weak_ptr<state> weak = state_;
    return {[weak](segment_id id) {
              auto s = weak.lock();
              if (!s) return false;
              std::shared_lock lock(s->mu);
              return s->files.count(id) != 0;
            },
            [weak](std::span<const wire::data_item> items, std::span<const boost::asio::mutable_buffer> into,
                   std::span<errc> results) { return read_for_server(weak.lock(), items, into, results); }};
  }

  // Per request: success, segment_not_found (no such disk segment here, or
  // a range beyond its end), buffer_too_small, size_mismatch (a write's
  // source not of the replica's length), invalid_argument (a write not on
  // a block boundary with O_DIRECT), transfer_failed (the kernel's error or
  // a short transfer), cancelled.
  boost::asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    co_return co_await transfer<read_request>(state_, requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    co_return co_await transfer<write_request>(state_, requests, status);
  }

 private:
  struct free_deleter {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  using aligned_buffer = std::unique_ptr<std::byte, free_deleter>;

  struct state {
    state(boost::asio::any_io_executor ex, const disk_lane_options& o) : executor(std::move(ex)), options(o) {}
    boost::asio::any_io_executor executor;
    disk_lane_options options;
    std::shared_ptr<io::uring_queue> queue;
    mutable std::shared_mutex mu;
    std::unordered_map<segment_id, std::shared_ptr<const disk::disk_file>> files;
    aligned_buffer bounce;
    std::size_t bounce_size = 0;
    bool bounce_fixed = false;
    std::atomic<bool> bounce_taken{false};
    std::atomic<std::uint64_t> bytes_read{0}, bytes_written{0}, direct_pieces{0}, bounced_pieces{0},
        own_bounce_buffers{0}, failed_pieces{0};
  };

  // Under the lock, once: the ring and the registered bounce buffer.
  static std::error_code open_ring(state& s) {
    std::error_code ec;
    auto queue = io::uring_queue::open(s.executor, s.options.ring, ec);
    if (ec) return ec;
    if (s.options.bounce_bytes) {
      const std::size_t n = static_cast<std::size_t>(disk::round_up_to_block(s.options.bounce_bytes));
      void* p = std::aligned_alloc(disk::block_size, n);
      if (!p) return std::make_error_code(std::errc::not_enough_memory);
      std::memset(p, 0, n);
      s.bounce.reset(static_cast<std::byte*>(p));
      s.bounce_size = n;
      const iovec v{p, n};
      // Without the registration (RLIMIT_MEMLOCK) the buffer still serves,
      // with plain reads and writes.
      s.bounce_fixed = !queue->register_buffers(std::span<const iovec>(&v, 1));
    }
    s.queue = std::move(queue);
    return {};
  }

  // Requests of one file, in the batch's order.
  struct file_group {
    std::shared_ptr<const disk::disk_file> file;
    std::vector<std::uint32_t> index;  // into the batch
    disk::io_plan plan;
  };

  template <class Request>
  static boost::asio::awaitable<std::error_code> transfer(std::shared_ptr<state> s,
                                                          std::span<const Request> requests,
                                                          std::span<errc> status) {
    constexpr bool reading = std::is_same_v<Request, read_request>;
    // Group by file, checking each request against its segment.
    std::vector<file_group> groups;
    std::shared_ptr<io::uring_queue> queue;
    {
      std::unordered_map<segment_id, std::size_t> group_of;
      std::shared_lock lock(s->mu);
      queue = s->queue;  // set before any file is attached
      for (std::uint32_t k = 0; k < requests.size(); ++k) {
        const replica_descriptor& r = requests[k].replica;
        status[k] = errc::success;
        auto f = s->files.find(r.segment);
        if (f == s->files.end() || r.offset > f->second->size() || r.length > f->second->size() - r.offset) {
          status[k] = errc::segment_not_found;
          continue;
        }
        if constexpr (reading) {
          if (requests[k].destination.size() < r.length) status[k] = errc::buffer_too_small;
        } else {
          if (requests[k].source.size() != r.length) status[k] = errc::size_mismatch;
        }
        if (status[k] != errc::success) continue;
        auto [it, fresh] = group_of.try_emplace(r.segment, groups.size());
        if (fresh) groups.push_back({f->second, {}, {}});
        groups[it->second].index.push_back(k);
      }
    }
    // Plans, and the bounce memory they need, laid end to end.
    std::uint64_t bounce_needed = 0;
    std::vector<std::uint64_t> bounce_base(groups.size());
    std::vector<disk::io_extent> extents;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      file_group& fg = groups[g];
      extents.clear();
      for (std::uint32_t k : fg.index) {
        const auto& rq = requests[k];
        const void* memory;
        if constexpr (reading)
          memory = rq.destination.data();
        else
          memory = rq.source.data();
        extents.push_back({rq.replica.offset, rq.replica.length, reinterpret_cast<std::uintptr_t>(memory)});
      }
      fg.plan.build(extents, reading ? disk::io_plan::direction::read : disk::io_plan::direction::write,
                    fg.file->direct(), s->options.max_piece);
      for (std::size_t j = 0; j < fg.index.size(); ++j)
        if (fg.plan.status()[j] != errc::success) status[fg.index[j]] = fg.plan.status()[j];
      bounce_base[g] = bounce_needed;
      bounce_needed += fg.plan.bounce_bytes();
    }
    // The registered buffer if free and large enough, else the batch's own.
    std::byte* bounce = nullptr;
    aligned_buffer own;
    bool using_shared = false;
    if (bounce_needed) {
      if (bounce_needed <= s->bounce_size && !s->bounce_taken.exchange(true, std::memory_order_acquire)) {
        using_shared = true;
        bounce = s->bounce.get();
      } else {
        own.reset(static_cast<std::byte*>(std::aligned_alloc(disk::block_size, bounce_needed)));
        if (!own) {
          for (auto& st : status)
            if (st == errc::success) st = errc::transfer_failed;
          co_return std::make_error_code(std::errc::not_enough_memory);
        }
        bounce = own.get();
        s->own_bounce_buffers.fetch_add(1, std::memory_order_relaxed);
      }
    }
    struct bounce_release {
      state* s;
      bool held;
      ~bounce_release() {
        if (held) s->bounce_taken.store(false, std::memory_order_release);
      }
    } release{s.get(), using_shared};

    auto caller_memory = [&](std::uint32_t k) -> std::byte* {
      if constexpr (reading)
        return static_cast<std::byte*>(requests[k].destination.data());
      else
        return static_cast<std::byte*>(const_cast<void*>(requests[k].source.data()));
    };
    if constexpr (!reading) {
      if (bounce) std::memset(bounce, 0, bounce_needed);  // tails are padded with zeros
      for (std::size_t g = 0; g < groups.size(); ++g)
        for (const disk::bounce_copy& c : groups[g].plan.copies())
          std::memcpy(bounce + bounce_base[g] + c.bounce_offset, caller_memory(groups[g].index[c.transfer]) + c.caller_offset,
                      c.length);
    }

    std::vector<io::uring_request> ios;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const file_group& fg = groups[g];
      for (const disk::io_piece& p : fg.plan.pieces()) {
        io::uring_request q;
        q.op = reading ? io::uring_request::kind::read : io::uring_request::kind::write;
        q.file = fg.file->fd();
        q.length = p.length;
        q.offset = p.file_offset;
        if (p.bounce) {
          q.data = bounce + bounce_base[g] + p.memory_offset;
          if (using_shared && s->bounce_fixed) q.buffer_index = 0;
        } else {
          q.data = caller_memory(fg.index[p.transfer]) + p.memory_offset;
        }
        ios.push_back(q);
      }
    }
    const std::error_code ec = ios.empty() ? std::error_code{} : co_await queue->run(ios);

    // Outcomes, piece by piece.
    std::size_t at = 0;
    std::uint64_t moved = 0, direct = 0, bounced = 0, failed = 0;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const file_group& fg = groups[g];
      for (const disk::io_piece& p : fg.plan.pieces()) {
        const io::uring_request& q = ios[at++];
        errc& st = status[fg.index[p.transfer]];
        (p.bounce ? bounced : direct) += 1;
        if (q.result == static_cast<int>(p.length)) continue;
        ++failed;
        if (st == errc::success) st = q.result == -ECANCELED ? errc::cancelled : errc::transfer_failed;
      }
      for (std::size_t j = 0; j < fg.index.size(); ++j)
        if (status[fg.index[j]] == errc::success) moved += requests[fg.index[j]].replica.length;
      if constexpr (reading)
        for (const disk::bounce_copy& c : fg.plan.copies())
          if (status[fg.index[c.transfer]] == errc::success)
            std::memcpy(caller_memory(fg.index[c.transfer]) + c.caller_offset, bounce + bounce_base[g] + c.bounce_offset,
                        c.length);
    }
    (reading ? s->bytes_read : s->bytes_written).fetch_add(moved, std::memory_order_relaxed);
    s->direct_pieces.fetch_add(direct, std::memory_order_relaxed);
    s->bounced_pieces.fetch_add(bounced, std::memory_order_relaxed);
    s->failed_pieces.fetch_add(failed, std::memory_order_relaxed);
    co_return ec;
  }

  static boost::asio::awaitable<void> read_for_server(std::shared_ptr<state> s, std::span<const wire::data_item> items,
                                                     std::span<const boost::asio::mutable_buffer> into,
                                                     std::span<errc> results) {
    if (!s) {
      std::fill(results.begin(), results.end(), errc::segment_not_found);
      co_return;
    }
    std::vector<read_request> requests;
    for (std::size_t i = 0; i < items.size(); ++i)
      requests.push_back({{items[i].segment, 0, items[i].offset, items[i].length}, into[i]});
    // Per item statuses are exact whatever the whole call's outcome (a
    // cancellation leaves finished reads success, the rest cancelled).
    (void)co_await transfer<read_request>(s, requests, results);
  }

  std::shared_ptr<state> state_;
};

static_assert(lane<disk_lane>);

}  // namespace corokv
