// The binary protocol: every message round-trips, and every kind of
// malformed input is refused with protocol_error without reading out of
// bounds or allocating for what was not sent.

#include "../support/wire_samples.hpp"

#include <doctest/doctest.h>

#include <cstring>

using namespace corokv;
using namespace corokv::wire;

namespace {

std::vector<std::byte> bytes_of(std::initializer_list<unsigned> values) {
  std::vector<std::byte> out;
  for (unsigned v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

template <class M>
std::vector<std::byte> encoded(const M& m) {
  std::vector<std::byte> payload;
  REQUIRE(encode(m, payload) == errc::success);
  return payload;
}

}  // namespace

TEST_CASE("frame headers round-trip and bad ones are refused") {
  const frame_header h{message_type::query, true, 0x1122334455667788ull, 4096, 0x0102030405060708ull};
  const auto raw = encode_header(h);
  frame_header back;
  REQUIRE(decode_header(raw, {}, back) == errc::success);
  CHECK(back.type == message_type::query);
  CHECK(back.response);
  CHECK(back.request_id == h.request_id);
  CHECK(back.payload_size == 4096);
  CHECK(back.term == h.term);
  auto restamped = raw;
  REQUIRE(stamp_term(restamped, 77));
  REQUIRE(decode_header(restamped, {}, back) == errc::success);
  CHECK(back.term == 77);
  CHECK(back.request_id == h.request_id);

  auto broken = raw;
  broken[0] = std::byte{0};  // magic
  CHECK(decode_header(broken, {}, back) == errc::protocol_error);
  broken = raw;
  broken[2] = std::byte{1};  // version 1: no term in its header
  CHECK(decode_header(broken, {}, back) == errc::protocol_error);
  broken = raw;
  broken[3] = std::byte{0};  // type 0
  CHECK(decode_header(broken, {}, back) == errc::protocol_error);
  broken[3] = std::byte{last_message_type + 1};
  CHECK(decode_header(broken, {}, back) == errc::protocol_error);
  limits small;
  small.max_payload = 1024;
  CHECK(decode_header(raw, small, back) == errc::protocol_error);  // 4096 > 1024
  CHECK(decode_header(std::span(raw).first(header_size - 1), {}, back) == errc::protocol_error);
}

TEST_CASE("every request round-trips through encode and decode") {
  for (auto& [type, original] : samples::requests()) {
    CAPTURE(static_cast<int>(type));
    std::vector<std::byte> payload;
    REQUIRE(std::visit([&](auto& m) { return encode(m, payload); }, original) == errc::success);
    const auto data = samples::trailing_for(original);
    payload.insert(payload.end(), data.begin(), data.end());
    request decoded;
    std::span<const std::byte> trailing;
    REQUIRE(decode_request(type, payload, decoded, trailing) == errc::success);
    CHECK(decoded == original);
    CHECK(trailing.size() == data.size());
  }
}

TEST_CASE("every response round-trips through encode and decode") {
  for (auto& [type, original] : samples::responses()) {
    CAPTURE(static_cast<int>(type));
    std::vector<std::byte> payload;
    REQUIRE(std::visit([&](auto& m) { return encode(m, payload); }, original) == errc::success);
    const auto data = samples::trailing_for(original);
    payload.insert(payload.end(), data.begin(), data.end());
    response decoded;
    std::span<const std::byte> trailing;
    REQUIRE(decode_response(type, payload, decoded, trailing) == errc::success);
    CHECK(decoded == original);
    CHECK(trailing.size() == data.size());
  }
}

TEST_CASE("every truncation of every message is refused, never read past") {
  for (auto& [type, original] : samples::requests()) {
    std::vector<std::byte> payload;
    std::visit([&](auto& m) { return encode(m, payload); }, original);
    const auto data = samples::trailing_for(original);
    payload.insert(payload.end(), data.begin(), data.end());
    for (std::size_t cut = 0; cut < payload.size(); ++cut) {
      // A copy of exactly `cut` bytes, so ASan sees any read past its end.
      std::vector<std::byte> shorter(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(cut));
      request decoded;
      std::span<const std::byte> trailing;
      CHECK(decode_request(type, shorter, decoded, trailing) == errc::protocol_error);
    }
  }
}

TEST_CASE("bytes after a message, or missing data bytes, are refused") {
  auto payload = encoded(keys_request{{"a", "b"}});
  payload.push_back(std::byte{0});
  keys_request k;
  CHECK(decode(payload, k) == errc::protocol_error);

  data_write_request w{{{1, 0, 10, 1}}};
  auto table = encoded(w);
  table.resize(table.size() + 9);  // one byte short of the item's 10
  data_write_request back;
  CHECK(decode(table, back) == errc::protocol_error);
  table.resize(table.size() + 1);
  CHECK(decode(table, back) == errc::success);
}

TEST_CASE("a count larger than the bytes that follow is refused before allocating") {
  // keys_request claiming 65,536 keys in 4 bytes of payload.
  const auto bomb = bytes_of({0x00, 0x00, 0x01, 0x00});
  keys_request k;
  CHECK(decode(bomb, k) == errc::protocol_error);
  CHECK(k.keys.capacity() == 0);
  // Over max_batch even if the bytes were there.
  limits lim;
  lim.max_batch = 2;
  CHECK(decode(encoded(keys_request{{"a", "b", "c"}}), k, lim) == errc::protocol_error);
  std::vector<std::byte> payload;
  CHECK(encode(keys_request{{"a", "b", "c"}}, payload, lim) == errc::invalid_argument);
}

TEST_CASE("out-of-range fields are refused: status codes, replica counts, flags, lengths lists") {
  mount_request m{1, 4096, 0, {}, true, storage_tier::disk};
  auto mp = encoded(m);
  REQUIRE(mp[mp.size() - 2] == std::byte{1});  // the remount flag
  REQUIRE(mp.back() == std::byte{1});          // the tier: disk
  mount_request mback;
  REQUIRE(decode(mp, mback) == errc::success);
  CHECK(mback.remount);
  CHECK(mback.tier == storage_tier::disk);
  mp.back() = std::byte{2};  // no such tier
  CHECK(decode(mp, mback) == errc::protocol_error);
  mp.back() = std::byte{1};
  mp[mp.size() - 2] = std::byte{2};  // not a flag
  CHECK(decode(mp, mback) == errc::protocol_error);

  statuses_response r{errc::success, {errc::success}};
  auto payload = encoded(r);
  payload.back() = std::byte{0xee};  // not an errc
  statuses_response back;
  CHECK(decode(payload, back) == errc::protocol_error);

  query_result q;
  q.status = errc::success;
  query_response qr{errc::success, {q}};
  auto qp = encoded(qr);
  qp[1 + 4 + 1 + 8 + 8] = std::byte{max_replicas + 1};  // the replica count
  query_response qback;
  CHECK(decode(qp, qback) == errc::protocol_error);

  // Lengths that do not pair with results: not even encodable...
  data_read_response mismatched{errc::success, {errc::success, errc::success}, {1}};
  std::vector<std::byte> refused;
  CHECK(encode(mismatched, refused) == errc::invalid_argument);
  // ...and refused when a peer sends them anyway.
  std::vector<std::byte> forged;
  {
    writer w(forged);  // the bytes are in place once it is gone
    w.status_code(errc::success);
    w.u32(2);
    w.status_code(errc::success);
    w.status_code(errc::success);
    w.u32(1);
    w.u64(1);
  }
  forged.push_back(std::byte{0});
  data_read_response dback;
  CHECK(decode(forged, dback) == errc::protocol_error);

  // A validate request names one replica per key, or it is malformed.
  validate_request unpaired{{"a", "b"}, {1, 2}, {replica_descriptor{1, 2, 3, 4, 5}}};
  CHECK(encode(unpaired, refused) == errc::invalid_argument);
  std::vector<std::byte> forged_validate;
  {
    writer w(forged_validate);
    w.u32(1);  // one key...
    std::string_view key = "a";
    w.string(key);
    w.u32(1);  // ...one version...
    w.u64(7);
    w.u32(0);  // ...and no replica
  }
  validate_request vback;
  CHECK(decode(forged_validate, vback) == errc::protocol_error);
}

TEST_CASE("over-long keys decode: they are bad input for the service to refuse per key, not malformed frames") {
  const std::string long_key(max_key_length + 500, 'x');
  keys_request k{{long_key, ""}};
  keys_request back;
  REQUIRE(decode(encoded(k), back) == errc::success);
  CHECK(back.keys[0].size() == long_key.size());
  CHECK(check_key(back.keys[0]) == errc::invalid_key);
  CHECK(check_key(back.keys[1]) == errc::invalid_key);
}

TEST_CASE("a data reply's table has the size its request implies, whatever each item's status") {
  for (std::size_t items : {std::size_t{0}, std::size_t{1}, std::size_t{64}, std::size_t{1000}}) {
    data_read_response read;
    statuses_response written;
    for (std::size_t i = 0; i < items; ++i) {
      read.results.push_back(i % 3 ? errc::success : errc::segment_not_found);
      read.lengths.push_back(i % 3 ? 4096 + i : 0);
      written.results.push_back(i % 2 ? errc::success : errc::size_mismatch);
    }
    std::vector<std::byte> a, b;
    REQUIRE(encode(read, a) == errc::success);
    REQUIRE(encode(written, b) == errc::success);
    CHECK(a.size() == data_read_response_size(items));
    CHECK(b.size() == data_write_response_size(items));
  }
}
