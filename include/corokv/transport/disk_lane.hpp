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
// Memory the caller registers with the store (register_buffer; the buffer
// pool's too) becomes fixed buffers of the ring, a slot per region (one per
// GiB of a larger one): straight transfers into it skip the kernel's
// pinning of the pages for every request (11-76% faster reads here:
// benchmarks/RESULTS.md, disk_bench). Without room in the table (a region
// waits for a slot to come free), or where the kernel refuses
// (RLIMIT_MEMLOCK), such memory is read as any other. Files are not
// registered: fio measured no difference here.
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
#include <corokv/transport/destination_groups.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/request_shape.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <algorithm>
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

namespace corokv::transport {

struct disk_lane_options {
  io::uring_options ring;
  std::size_t bounce_bytes = 4u << 20;  // the registered bounce buffer; 0: none
  std::uint64_t max_piece = 8u << 20;   // the longest single request
  // Fixed-buffer slots for registered memory: one per region, and one per
  // GiB of a larger one (the bounce buffer takes one); 0 or 1: only the
  // bounce buffer is fixed.
  unsigned fixed_buffer_slots = 64;
};

struct disk_lane_stats {
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t direct_pieces = 0;   // straight between the caller's memory and the file
  std::uint64_t bounced_pieces = 0;  // through bounce memory
  std::uint64_t own_bounce_buffers = 0;  // batches that found the registered one taken or too small
  std::uint64_t failed_pieces = 0;
  std::uint64_t fixed_pieces = 0;       // straight pieces through registered memory (fixed buffers)
  std::uint64_t unfixed_regions = 0;    // registrations that found no slot (table full, or refused); some may get one later
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
    return {s.bytes_read.load(),         s.bytes_written.load(),  s.direct_pieces.load(),
            s.bounced_pieces.load(),     s.own_bounce_buffers.load(), s.failed_pieces.load(),
            s.fixed_pieces.load(),       s.unfixed_regions.load()};
  }
  io::uring_stats ring_stats() const {
    std::shared_lock lock(state_->mu);
    return state_->queue ? state_->queue->stats() : io::uring_stats{};
  }
  bool fixed_bounce_buffer() const {
    std::shared_lock lock(state_->mu);
    return state_->bounce_fixed;
  }
  // Whether registered memory can become fixed buffers (the ring has a
  // table of slots: Linux 5.19 or later); false before the first attach.
  bool fixed_buffer_table() const {
    std::shared_lock lock(state_->mu);
    return state_->buffer_table;
  }

  lane_rank rank(const segment_route& where) { return attached(where.id) ? ranks::disk : ranks::unreachable; }

  // Memory the store registers: fixed buffers of the ring, now or when the
  // ring is set up (the first attach). Never refused: memory without a slot
  // is read with plain requests.
  std::error_code register_region(memory::registered_region& region, std::unique_ptr<memory::lane_registration>& out) {
    auto made = std::make_unique<fixed_region>(state_);
    for (std::size_t at = 0; at < region.size(); at += max_fixed_buffer) {
      auto piece = std::make_unique<fixed_piece>();
      piece->data = region.data() + at;
      piece->size = std::min(max_fixed_buffer, region.size() - at);
      made->pieces.push_back(std::move(piece));
    }
    std::unique_lock lock(state_->mu);
    state_->regions.push_back(made.get());
    if (state_->buffer_table && !install(*state_, *made)) state_->unfixed_regions.fetch_add(1, std::memory_order_relaxed);
    out = std::move(made);
    return {};
  }

  // Reads remote readers' ranges of the disk segments attached here for
  // this node's data server (serving_lane: a range source).
  void serve(net::data_server& server) const {
    std::weak_ptr<state> weak = state_;
    server.add_range_source(
        {[weak](segment_id id) {
           auto s = weak.lock();
           if (!s) return false;
           std::shared_lock lock(s->mu);
           return s->files.count(id) != 0;
         },
         [weak](std::span<const wire::data_item> items, std::span<const boost::asio::mutable_buffer> into,
                std::span<errc> results) { return read_for_server(weak.lock(), items, into, results); }});
  }

  // Per request: success, segment_not_found (no such disk segment here, or
  // a range beyond its end), buffer_too_small, size_mismatch (a write's
  // source not of the replica's length), invalid_argument (a write not on
  // a block boundary with O_DIRECT), transfer_failed (the kernel's error or
  // a short transfer), cancelled.
  boost::asio::awaitable<std::error_code> read(std::span<const memory::read_request> requests, std::span<errc> status) {
    co_return co_await transfer<memory::read_request>(state_, requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const memory::write_request> requests, std::span<errc> status) {
    co_return co_await transfer<memory::write_request>(state_, requests, status);
  }

 private:
  struct free_deleter {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  using aligned_buffer = std::unique_ptr<std::byte, free_deleter>;

  // The kernel's limit for one fixed buffer.
  static constexpr std::size_t max_fixed_buffer = std::size_t{1} << 30;
  struct fixed_piece {
    std::byte* data = nullptr;
    std::size_t size = 0;
    std::atomic<int> slot{-1};  // set once, under the state's lock; read by transfers without it
  };
  struct state;
  // What the lane keeps for a registered region: its pieces' slots, emptied
  // when the store unregisters it and no transfer uses it any more.
  struct fixed_region : memory::lane_registration {
    explicit fixed_region(std::weak_ptr<state> s) : owner(std::move(s)) {}
    ~fixed_region() override {
      if (auto s = owner.lock()) forget(*s, *this);
    }
    // The slot of the piece holding [p, p + n), or -1.
    int slot_for(const void* p, std::size_t n) const noexcept {
      const auto* b = static_cast<const std::byte*>(p);
      for (const auto& piece : pieces)
        if (b >= piece->data && n <= piece->size && b - piece->data <= static_cast<std::ptrdiff_t>(piece->size - n))
          return piece->slot.load(std::memory_order_acquire);
      return -1;
    }
    std::weak_ptr<state> owner;
    std::vector<std::unique_ptr<fixed_piece>> pieces;
  };

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
    bool buffer_table = false;        // the ring has a table of fixed-buffer slots
    std::vector<bool> slot_taken;     // its slots
    std::vector<fixed_region*> regions;  // registered memory, installed in slots or waiting for the ring
    std::atomic<std::uint64_t> bytes_read{0}, bytes_written{0}, direct_pieces{0}, bounced_pieces{0},
        own_bounce_buffers{0}, failed_pieces{0}, fixed_pieces{0}, unfixed_regions{0};
  };

  // Under the state's lock: slots for a region's pieces, while there are
  // free ones; whether every piece has one.
  static bool install(state& s, fixed_region& r) {
    for (auto& piece : r.pieces) {
      if (piece->slot.load(std::memory_order_relaxed) >= 0) continue;
      auto free_slot = std::find(s.slot_taken.begin(), s.slot_taken.end(), false);
      if (free_slot == s.slot_taken.end()) return false;
      const auto slot = static_cast<unsigned>(free_slot - s.slot_taken.begin());
      if (s.queue->update_buffer(slot, iovec{piece->data, piece->size}))
        return false;  // RLIMIT_MEMLOCK, or memory the kernel cannot pin
      *free_slot = true;
      piece->slot.store(static_cast<int>(slot), std::memory_order_release);
    }
    return true;
  }

  // A region unregistered (no transfer uses it any more): its slots freed.
  static void forget(state& s, fixed_region& r) {
    std::unique_lock lock(s.mu);
    std::erase(s.regions, &r);
    for (auto& piece : r.pieces) {
      const int slot = piece->slot.load(std::memory_order_relaxed);
      if (slot < 0) continue;
      // A failure leaves the slot holding the memory (pinned) and taken.
      if (!s.queue->update_buffer(static_cast<unsigned>(slot), iovec{nullptr, 0}))
        s.slot_taken[static_cast<std::size_t>(slot)] = false;
    }
    // Slots came free: regions still waiting for one take them, oldest first.
    if (s.buffer_table)
      for (fixed_region* waiting : s.regions)
        if (!install(s, *waiting)) break;
  }

  // Under the lock, once: the ring, the registered bounce buffer and the
  // memory registered so far.
  static std::error_code open_ring(state& s) {
    std::error_code ec;
    auto queue = io::uring_queue::open(s.executor, s.options.ring, ec);
    if (ec) return ec;
    // Slot 0 is the bounce buffer's; without a table (an older kernel), the
    // bounce buffer alone is registered.
    if (s.options.fixed_buffer_slots > 1 && !queue->register_buffer_table(s.options.fixed_buffer_slots)) {
      s.buffer_table = true;
      s.slot_taken.assign(s.options.fixed_buffer_slots, false);
      s.slot_taken[0] = true;
    }
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
      s.bounce_fixed = s.buffer_table ? !queue->update_buffer(0, v)
                                      : !queue->register_buffers(std::span<const iovec>(&v, 1));
    }
    s.queue = std::move(queue);
    if (s.buffer_table)
      for (fixed_region* r : s.regions)
        if (!install(s, *r)) s.unfixed_regions.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // Requests of one file, in the batch's order.
  struct file_group {
    std::shared_ptr<const disk::disk_file> file;
    std::span<const std::uint32_t> index;  // into the batch (held by the batch's destination_groups)
    disk::io_plan plan;
  };

  template <class Request>
  static boost::asio::awaitable<std::error_code> transfer(std::shared_ptr<state> s,
                                                          std::span<const Request> requests,
                                                          std::span<errc> status) {
    constexpr bool reading = std::is_same_v<Request, memory::read_request>;
    // Group by file, checking each request against its segment (and its
    // shape, for a caller other than the router: request_shape.hpp).
    std::vector<file_group> groups;
    destination_groups<segment_id> by_file;
    std::shared_ptr<io::uring_queue> queue;
    {
      std::shared_lock lock(s->mu);
      queue = s->queue;  // set before any file is attached
      for (std::uint32_t k = 0; k < requests.size(); ++k) {
        const replica_descriptor& r = requests[k].replica;
        auto f = s->files.find(r.segment);
        if (f == s->files.end() || r.offset > f->second->size() || r.length > f->second->size() - r.offset) {
          status[k] = errc::segment_not_found;
          continue;
        }
        if ((status[k] = request_shape(requests[k])) != errc::success) continue;
        if (by_file.add(r.segment, k) == groups.size()) groups.push_back({f->second, {}, {}});
      }
      for (std::size_t g = 0; g < groups.size(); ++g) groups[g].index = by_file.index(g);
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
    std::uint64_t fixed = 0;
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
          const std::uint32_t k = fg.index[p.transfer];
          q.data = caller_memory(k) + p.memory_offset;
          // Registered memory: the router hands this lane its own registration.
          if (const auto* r = static_cast<const fixed_region*>(requests[k].registration))
            if (const int slot = r->slot_for(q.data, q.length); slot >= 0) {
              q.buffer_index = slot;
              ++fixed;
            }
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
    s->fixed_pieces.fetch_add(fixed, std::memory_order_relaxed);
    co_return ec;
  }

  static boost::asio::awaitable<void> read_for_server(std::shared_ptr<state> s, std::span<const wire::data_item> items,
                                                     std::span<const boost::asio::mutable_buffer> into,
                                                     std::span<errc> results) {
    if (!s) {
      std::fill(results.begin(), results.end(), errc::segment_not_found);
      co_return;
    }
    std::vector<memory::read_request> requests;
    for (std::size_t i = 0; i < items.size(); ++i)
      requests.push_back({{items[i].segment, 0, items[i].offset, items[i].length}, into[i]});
    // Per item statuses are exact whatever the whole call's outcome (a
    // cancellation leaves finished reads success, the rest cancelled).
    (void)co_await transfer<memory::read_request>(s, requests, results);
  }

  std::shared_ptr<state> state_;
};

static_assert(lane<disk_lane>);
static_assert(registering_lane<disk_lane>);
static_assert(serving_lane<disk_lane>);

}  // namespace corokv::transport
