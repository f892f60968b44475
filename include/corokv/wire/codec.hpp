#pragma once
// Field-level encoding, shared by every message. A message lists its fields
// once (a `fields(archive, message)` function); `writer` appends them to a
// buffer and `reader` takes them from a payload, checking every length and
// count against what remains and against the limits before using or
// allocating anything. Decoded strings are views into the payload.

#include <corokv/types.hpp>
#include <corokv/wire/frame.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace corokv::wire {

// Appends to `out`. The buffer grows in chunks while fields are written,
// and holds exactly the encoded bytes once the writer is destroyed.
class writer {
 public:
  static constexpr bool reading = false;
  explicit writer(std::vector<std::byte>& out, const limits& lim = {}) : out_(out), limits_(lim), end_(out.size()) {}
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;
  ~writer() { out_.resize(end_); }

  // invalid_argument if something could not be represented (a list longer
  // than max_batch, a string over 65535 bytes); the output is then unusable.
  errc status() const noexcept { return status_; }

  void u8(const std::uint8_t& v) { put(v, 1); }
  void u16(const std::uint16_t& v) { put(v, 2); }
  void u32(const std::uint32_t& v) { put(v, 4); }
  void u64(const std::uint64_t& v) { put(v, 8); }
  void i64(const std::int64_t& v) { put(static_cast<std::uint64_t>(v), 8); }
  void string(const std::string_view& s) {
    if (s.size() > UINT16_MAX) return fail();
    u16(static_cast<std::uint16_t>(s.size()));
    std::memcpy(room(s.size()), s.data(), s.size());
  }
  void string(std::string& s) { string(std::string_view(s)); }
  // A list's length; `min_wire_size` matters to the reader only.
  std::size_t count(std::size_t n, std::size_t /*min_wire_size*/) {
    if (n > limits_.max_batch) fail();
    u32(static_cast<std::uint32_t>(n));
    return n;
  }
  void status_code(const errc& e) { u8(static_cast<std::uint8_t>(e)); }
  void reject() { fail(); }

 private:
  // The wire is little-endian: on such a host the value's own first n bytes.
  void put(std::uint64_t v, std::size_t n) {
    std::byte* at = room(n);
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(at, &v, n);
    } else {
      for (std::size_t i = 0; i < n; ++i) at[i] = static_cast<std::byte>(v >> (8 * i));
    }
  }
  // Where the next n bytes go.
  std::byte* room(std::size_t n) {
    if (out_.size() - end_ < n) out_.resize(std::max(2 * out_.size(), end_ + n + 256));
    std::byte* at = out_.data() + end_;
    end_ += n;
    return at;
  }
  void fail() { status_ = errc::invalid_argument; }

  std::vector<std::byte>& out_;
  limits limits_;
  std::size_t end_;  // bytes of out_ in use
  errc status_ = errc::success;
};

class reader {
 public:
  static constexpr bool reading = true;
  reader(std::span<const std::byte> in, const limits& lim = {}) : in_(in), limits_(lim) {}

  // protocol_error once anything was out of bounds or out of range; further
  // reads then yield zeros and change nothing.
  errc status() const noexcept { return ok_ ? errc::success : errc::protocol_error; }
  bool at_end() const noexcept { return pos_ == in_.size(); }
  std::size_t remaining() const noexcept { return in_.size() - pos_; }
  std::span<const std::byte> rest() const noexcept { return in_.subspan(pos_); }

  void u8(std::uint8_t& v) { v = static_cast<std::uint8_t>(take(1)); }
  void u16(std::uint16_t& v) { v = static_cast<std::uint16_t>(take(2)); }
  void u32(std::uint32_t& v) { v = static_cast<std::uint32_t>(take(4)); }
  void u64(std::uint64_t& v) { v = take(8); }
  void i64(std::int64_t& v) { v = static_cast<std::int64_t>(take(8)); }
  void string(std::string_view& s) {
    std::uint16_t n = 0;
    u16(n);
    if (!ok_ || n > remaining()) return fail();
    s = std::string_view(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
  }
  void string(std::string& s) {
    std::string_view view;
    string(view);
    s.assign(view);
  }
  // A list's length, refused if over max_batch or if that many elements of
  // at least `min_wire_size` bytes cannot fit in what remains: a peer cannot
  // make us allocate for elements it did not send.
  std::size_t count(std::size_t /*writer's n*/, std::size_t min_wire_size) {
    std::uint32_t n = 0;
    u32(n);
    if (!ok_ || n > limits_.max_batch || static_cast<std::uint64_t>(n) * min_wire_size > remaining()) {
      fail();
      return 0;
    }
    return n;
  }
  void status_code(errc& e) {
    std::uint8_t v = 0;
    u8(v);
    if (v > static_cast<std::uint8_t>(last_errc)) return fail();
    e = static_cast<errc>(v);
  }
  // A field held a value outside its range.
  void reject() { fail(); }

 private:
  std::uint64_t take(std::size_t n) {
    if (!ok_ || n > remaining()) {
      fail();
      return 0;
    }
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }
  void fail() { ok_ = false; }

  std::span<const std::byte> in_;
  limits limits_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

// ------------------------------------------------------------ shared fields
// Each works in both directions: the writer reads the value, the reader sets it.

template <class Archive, class T, class Each>
void list(Archive& a, std::vector<T>& v, std::size_t min_wire_size, Each each) {
  const std::size_t n = a.count(v.size(), min_wire_size);
  if constexpr (Archive::reading) v.resize(n);
  for (std::size_t i = 0; i < n; ++i) each(a, v[i]);
}

template <class Archive>
void keys(Archive& a, std::vector<std::string_view>& v) {
  list(a, v, 2, [](Archive& ar, std::string_view& k) { ar.string(k); });
}

template <class Archive>
void u64s(Archive& a, std::vector<std::uint64_t>& v) {
  list(a, v, 8, [](Archive& ar, std::uint64_t& x) { ar.u64(x); });
}

template <class Archive>
void statuses(Archive& a, std::vector<errc>& v) {
  list(a, v, 1, [](Archive& ar, errc& e) { ar.status_code(e); });
}

// A bool, as one byte that must be 0 or 1.
template <class Archive>
void flag(Archive& a, bool& b) {
  std::uint8_t v = b ? 1 : 0;
  a.u8(v);
  if (v > 1) return a.reject();
  if constexpr (Archive::reading) b = v == 1;
}

// One replica descriptor: five u64s.
inline constexpr std::size_t replica_size = 40;
template <class Archive>
void replica(Archive& a, replica_descriptor& d) {
  a.u64(d.segment);
  a.u64(d.node);
  a.u64(d.offset);
  a.u64(d.length);
  a.u64(d.epoch);
}

template <class Archive>
void replicas(Archive& a, replica_list& r) {
  std::uint8_t n = static_cast<std::uint8_t>(r.size());
  a.u8(n);
  if (n > max_replicas) return a.reject();
  if constexpr (Archive::reading) r.clear();
  for (std::uint8_t i = 0; i < n; ++i) {
    replica_descriptor d = Archive::reading ? replica_descriptor{} : r[i];
    replica(a, d);
    if constexpr (Archive::reading) r.push_back(d);
  }
}

}  // namespace corokv::wire
