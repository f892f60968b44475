#pragma once
// How a batch of disk transfers becomes I/O requests: sans-I/O, so that
// the rules of O_DIRECT are decided (and tested) without a file.
//
// Each transfer is a byte range of the file and a caller's memory range.
// Buffered files take any range: one piece per transfer (split at
// max_piece). With O_DIRECT, file offsets, lengths and memory must all be
// block-aligned:
//   - a transfer at an aligned offset into aligned memory goes straight
//     between the caller's memory and the file for its whole blocks; its
//     last partial block, if any, goes through one block of bounce memory;
//   - anything else goes whole through the bounce memory, over the blocks
//     its range touches.
// A write must start on a block boundary (disk extents are allocated in
// blocks): writing a partial first block would overwrite its neighbour's
// bytes. Its last block is padded with zeros, inside its own extent.
//
// Bounce memory is one area of bounce_bytes(), block-aligned; pieces name
// offsets in it, and copies() say what moves between it and the caller:
// before the I/O for writes (the rest of the area zeroed), after it for
// reads.

#include <corokv/disk/disk_file.hpp>
#include <corokv/error.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace corokv::disk {

struct io_extent {
  std::uint64_t file_offset = 0;
  std::uint64_t length = 0;
  std::uintptr_t memory = 0;  // the caller's memory for these bytes
};

struct io_piece {
  std::uint32_t transfer = 0;  // index of the io_extent it serves
  std::uint64_t file_offset = 0;
  std::uint32_t length = 0;
  bool bounce = false;
  // Into the caller's memory (the transfer's own, not offset) if !bounce,
  // else into the bounce area.
  std::uint64_t memory_offset = 0;
};

struct bounce_copy {
  std::uint32_t transfer = 0;
  std::uint64_t bounce_offset = 0;
  std::uint64_t caller_offset = 0;  // from the transfer's memory
  std::uint64_t length = 0;
};

class io_plan {
 public:
  enum class direction : std::uint8_t { read, write };

  // Per transfer: success, or invalid_argument (a write not starting on a
  // block boundary with O_DIRECT, or an empty transfer), which then has no
  // pieces. `max_piece` is a multiple of block_size.
  void build(std::span<const io_extent> transfers, direction dir, bool direct,
             std::uint64_t max_piece = 8u << 20) {
    pieces_.clear();
    copies_.clear();
    status_.assign(transfers.size(), errc::success);
    bounce_bytes_ = 0;
    max_piece = std::max<std::uint64_t>(block_size, max_piece / block_size * block_size);
    for (std::uint32_t t = 0; t < transfers.size(); ++t) {
      const io_extent& x = transfers[t];
      if (x.length == 0) {
        status_[t] = errc::invalid_argument;
        continue;
      }
      if (!direct) {
        add_pieces(t, x.file_offset, x.length, /*bounce=*/false, 0, max_piece);
        continue;
      }
      const bool aligned_start = x.file_offset % block_size == 0;
      if (dir == direction::write && !aligned_start) {
        status_[t] = errc::invalid_argument;
        continue;
      }
      if (aligned_start && x.memory % block_size == 0) {
        const std::uint64_t body = x.length / block_size * block_size;
        if (body) add_pieces(t, x.file_offset, body, /*bounce=*/false, 0, max_piece);
        if (const std::uint64_t tail = x.length - body) {
          const std::uint64_t at = take_bounce(block_size);
          add_pieces(t, x.file_offset + body, block_size, /*bounce=*/true, at, max_piece);
          copies_.push_back({t, at, body, tail});
        }
        continue;
      }
      const std::uint64_t lo = x.file_offset / block_size * block_size;
      const std::uint64_t hi = round_up_to_block(x.file_offset + x.length);
      const std::uint64_t at = take_bounce(hi - lo);
      add_pieces(t, lo, hi - lo, /*bounce=*/true, at, max_piece);
      copies_.push_back({t, at + (x.file_offset - lo), 0, x.length});
    }
  }

  std::span<const io_piece> pieces() const noexcept { return pieces_; }
  std::span<const bounce_copy> copies() const noexcept { return copies_; }
  std::span<const errc> status() const noexcept { return status_; }
  std::uint64_t bounce_bytes() const noexcept { return bounce_bytes_; }

 private:
  std::uint64_t take_bounce(std::uint64_t n) {
    const std::uint64_t at = bounce_bytes_;
    bounce_bytes_ += n;  // n is whole blocks: every piece stays aligned
    return at;
  }

  void add_pieces(std::uint32_t t, std::uint64_t file_offset, std::uint64_t length, bool bounce,
                  std::uint64_t memory_offset, std::uint64_t max_piece) {
    for (std::uint64_t done = 0; done < length;) {
      const std::uint64_t n = std::min(max_piece, length - done);
      pieces_.push_back({t, file_offset + done, static_cast<std::uint32_t>(n), bounce, memory_offset + done});
      done += n;
    }
  }

  std::vector<io_piece> pieces_;
  std::vector<bounce_copy> copies_;
  std::vector<errc> status_;
  std::uint64_t bounce_bytes_ = 0;
};

}  // namespace corokv::disk
