#pragma once
// The frame every corokv message travels in: a fixed 24-byte header, then
// `payload_size` bytes. All integers are little-endian.
//
//   offset 0  u16 magic 0x4B43 ("CK")
//          2  u8  protocol version (5)
//          3  u8  message type (a response has the request's type | 0x80)
//          4  u64 request id (responses echo it; pipelined requests may be
//                 answered in any order)
//         12  u32 payload size (at most limits::max_payload)
//         16  u64 term: in a reply, the leadership term of the master that
//                 answered (0: a master without replication, or a data
//                 server); in a request, the newest term the sender has
//                 seen, so that a deposed master learns it at once
//
// A header that fails any check is a protocol_error: the connection that
// sent it is closed, nothing else is affected.

#include <corokv/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace corokv::wire {

inline constexpr std::uint16_t magic = 0x4B43;
inline constexpr std::uint8_t protocol_version = 5;
inline constexpr std::size_t header_size = 24;
inline constexpr std::uint8_t response_bit = 0x80;

enum class message_type : std::uint8_t {
  register_node = 1,
  heartbeat,
  unregister_node,
  mount_segment,
  unmount_segment,
  list_segments,
  put_start,
  put_end,
  put_revoke,
  query,
  exist,
  exist_prefix,
  remove,
  validate,
  data_read,
  data_write,
  rdma_connect,  // to a data server: set up an RDMA queue pair with it
  remove_all,    // hide every committed object
  follow,        // a follower asks a leading master for its state and journal
  replica_ack,   // a follower tells the leader how far it has applied
  demote_start,  // a node asks for objects to copy from its memory to its disk
  demote_end,    // ...and reports which copies are there
  adopt_disk_copies,  // a restarted node offers the copies its disk still holds
};
inline constexpr std::uint8_t last_message_type = static_cast<std::uint8_t>(message_type::adopt_disk_copies);

// What a peer may send; everything beyond is refused before allocation.
struct limits {
  std::uint32_t max_payload = 64u << 20;  // metadata frames; data frames carry their bytes after the table
  std::uint32_t max_batch = 1u << 16;     // items in one list
};

struct frame_header {
  message_type type = message_type::query;
  bool response = false;
  std::uint64_t request_id = 0;
  std::uint32_t payload_size = 0;
  std::uint64_t term = 0;
};

inline std::array<std::byte, header_size> encode_header(const frame_header& h) {
  std::array<std::byte, header_size> out{};
  auto put = [&](std::size_t at, std::uint64_t v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) out[at + i] = static_cast<std::byte>(v >> (8 * i));
  };
  put(0, magic, 2);
  put(2, protocol_version, 1);
  put(3, static_cast<std::uint8_t>(h.type) | (h.response ? response_bit : 0), 1);
  put(4, h.request_id, 8);  // the request id's offset: see stamp_request_id
  put(12, h.payload_size, 4);
  put(16, h.term, 8);  // the term's offset: see stamp_term
  return out;
}

// Gives an encoded frame its request id (a client numbers a request when it
// queues it, after encoding). False if `frame` is shorter than a header.
inline bool stamp_request_id(std::span<std::byte> frame, std::uint64_t id) {
  if (frame.size() < header_size) return false;
  constexpr std::size_t request_id_offset = 4;
  for (std::size_t i = 0; i < 8; ++i) frame[request_id_offset + i] = static_cast<std::byte>(id >> (8 * i));
  return true;
}

// Gives an encoded frame its term (a master stamps the term it answers in).
inline bool stamp_term(std::span<std::byte> frame, std::uint64_t term) {
  if (frame.size() < header_size) return false;
  constexpr std::size_t term_offset = 16;
  for (std::size_t i = 0; i < 8; ++i) frame[term_offset + i] = static_cast<std::byte>(term >> (8 * i));
  return true;
}

// Checks magic, version, type and size before anything else is read.
inline errc decode_header(std::span<const std::byte> in, const limits& lim, frame_header& out) {
  if (in.size() < header_size) return errc::protocol_error;
  auto get = [&](std::size_t at, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(in[at + i]) << (8 * i);
    return v;
  };
  if (get(0, 2) != magic || get(2, 1) != protocol_version) return errc::protocol_error;
  const auto type = static_cast<std::uint8_t>(get(3, 1));
  const std::uint8_t base = type & static_cast<std::uint8_t>(~response_bit);
  if (base == 0 || base > last_message_type) return errc::protocol_error;
  const auto size = static_cast<std::uint32_t>(get(12, 4));
  if (size > lim.max_payload) return errc::protocol_error;
  out = {static_cast<message_type>(base), (type & response_bit) != 0, get(4, 8), size, get(16, 8)};
  return errc::success;
}

}  // namespace corokv::wire
