#pragma once
// The disk tier's index: an append-only log beside the data file, from
// which a restarted node finds its disk objects again. Sans-I/O: records
// are encoded into bytes and a log's bytes replayed into entries; the tier
// (disk_tier.hpp) does the I/O.
//
// One record per change, each framed and checksummed:
//   u32 magic "CKIX" | u32 body size | u32 crc32c(body) | body
// body: u8 kind, then
//   segment: u64 id                  the segment the tier is mounted as
//   added:   u64 version, u64 offset, u64 length, u32 crc32c(data),
//            u16 key size, key       a copy committed by the master
//   dropped: u64 version             the master released that copy
//
// Replay keeps, per key, the last copy added and not dropped. A copy whose
// extent overlaps one added after it is gone (its blocks were written
// again). The log ends at the first record that is torn (short, bad magic,
// bad checksum: a crash mid-append) or names an extent beyond the file;
// what follows is not read. The data itself is checked by the tier against
// each entry's checksum before anything is announced.

#include <corokv/disk/crc32c.hpp>
#include <corokv/disk/disk_file.hpp>
#include <corokv/types.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace corokv::disk {

struct index_entry {
  std::string key;
  version_t version = no_version;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint32_t data_crc = 0;
  friend bool operator==(const index_entry&, const index_entry&) = default;
};

enum class index_record : std::uint8_t { segment = 1, added = 2, dropped = 3 };

inline constexpr std::uint32_t index_magic = 0x58494b43;  // "CKIX" little-endian
inline constexpr std::size_t index_frame_size = 12;

namespace detail {
inline void put_u(std::vector<std::byte>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}
inline std::uint64_t get_u(const std::byte* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}
// Frames the body written after `start` (which left room for the frame).
inline void seal(std::vector<std::byte>& out, std::size_t start) {
  const std::size_t body = out.size() - start - index_frame_size;
  const std::uint32_t crc = crc32c(std::span<const std::byte>(out).subspan(start + index_frame_size, body));
  std::vector<std::byte> frame;
  put_u(frame, index_magic, 4);
  put_u(frame, body, 4);
  put_u(frame, crc, 4);
  std::memcpy(out.data() + start, frame.data(), index_frame_size);
}
inline std::size_t open_record(std::vector<std::byte>& out, index_record kind) {
  const std::size_t start = out.size();
  out.resize(out.size() + index_frame_size);
  out.push_back(static_cast<std::byte>(kind));
  return start;
}
}  // namespace detail

inline void append_segment_record(std::vector<std::byte>& out, segment_id id) {
  const std::size_t at = detail::open_record(out, index_record::segment);
  detail::put_u(out, id, 8);
  detail::seal(out, at);
}

// Keys longer than max_key_length are not entries (the service refuses them).
inline void append_added_record(std::vector<std::byte>& out, const index_entry& e) {
  const std::size_t at = detail::open_record(out, index_record::added);
  detail::put_u(out, e.version, 8);
  detail::put_u(out, e.offset, 8);
  detail::put_u(out, e.length, 8);
  detail::put_u(out, e.data_crc, 4);
  detail::put_u(out, e.key.size(), 2);
  out.insert(out.end(), reinterpret_cast<const std::byte*>(e.key.data()),
             reinterpret_cast<const std::byte*>(e.key.data()) + e.key.size());
  detail::seal(out, at);
}

inline void append_dropped_record(std::vector<std::byte>& out, version_t version) {
  const std::size_t at = detail::open_record(out, index_record::dropped);
  detail::put_u(out, version, 8);
  detail::seal(out, at);
}

struct index_replay {
  segment_id segment = 0;               // 0: no segment record
  std::vector<index_entry> entries;     // live, by offset
  std::uint64_t valid_bytes = 0;        // the log's good prefix
  std::size_t records = 0;              // read in it
  std::size_t overwritten = 0;          // copies whose blocks a later one took
  bool torn = false;                    // bytes after the good prefix
};

// Replays a log for a data file of `data_size` bytes.
inline index_replay replay_index(std::span<const std::byte> log, std::uint64_t data_size) {
  index_replay out;
  std::map<std::uint64_t, index_entry> by_offset;             // live copies
  std::unordered_map<std::string, std::uint64_t> offset_of;  // key -> its copy's offset
  std::unordered_map<version_t, std::uint64_t> offset_by_version;
  auto erase_at = [&](std::map<std::uint64_t, index_entry>::iterator it) {
    offset_of.erase(it->second.key);
    offset_by_version.erase(it->second.version);
    return by_offset.erase(it);
  };
  std::size_t at = 0;
  while (at < log.size()) {
    if (log.size() - at < index_frame_size) break;
    const std::byte* p = log.data() + at;
    const auto magic = detail::get_u(p, 4);
    const auto body = detail::get_u(p + 4, 4);
    const auto crc = static_cast<std::uint32_t>(detail::get_u(p + 8, 4));
    if (magic != index_magic || body == 0 || body > log.size() - at - index_frame_size) break;
    const auto bytes = log.subspan(at + index_frame_size, body);
    if (crc32c(bytes) != crc) break;
    const std::byte* b = bytes.data();
    const auto kind = static_cast<index_record>(b[0]);
    bool good = true;
    if (kind == index_record::segment && body == 9) {
      out.segment = detail::get_u(b + 1, 8);
    } else if (kind == index_record::dropped && body == 9) {
      if (auto it = offset_by_version.find(detail::get_u(b + 1, 8)); it != offset_by_version.end())
        erase_at(by_offset.find(it->second));
    } else if (kind == index_record::added && body >= 31) {
      index_entry e;
      e.version = detail::get_u(b + 1, 8);
      e.offset = detail::get_u(b + 9, 8);
      e.length = detail::get_u(b + 17, 8);
      e.data_crc = static_cast<std::uint32_t>(detail::get_u(b + 25, 4));
      const auto key_size = detail::get_u(b + 29, 2);
      good = body == 31 + key_size && key_size > 0 && key_size <= max_key_length && e.length > 0 &&
             e.offset <= data_size && e.length <= data_size - e.offset;
      if (good) {
        e.key.assign(reinterpret_cast<const char*>(b + 31), key_size);
        if (auto same = offset_of.find(e.key); same != offset_of.end()) erase_at(by_offset.find(same->second));
        // Copies whose blocks this one takes are gone.
        const std::uint64_t end = e.offset + round_up_to_block(e.length);
        auto it = by_offset.lower_bound(e.offset);
        if (it != by_offset.begin()) {
          auto before = std::prev(it);
          const auto& x = before->second;
          if (x.offset + round_up_to_block(x.length) > e.offset) it = before;
        }
        while (it != by_offset.end() && it->first < end) {
          it = erase_at(it);
          ++out.overwritten;
        }
        offset_of[e.key] = e.offset;
        offset_by_version[e.version] = e.offset;
        by_offset.emplace(e.offset, std::move(e));
      }
    } else {
      good = false;
    }
    if (!good) break;
    at += index_frame_size + body;
    ++out.records;
  }
  out.valid_bytes = at;
  out.torn = at < log.size();
  out.entries.reserve(by_offset.size());
  for (auto& [offset, e] : by_offset) out.entries.push_back(std::move(e));
  return out;
}

}  // namespace corokv::disk
