#pragma once
// etcd v3's HTTP/JSON gateway, without I/O: the request bodies corokv sends
// and the parsers for what comes back. Kept apart from the client so that
// every byte of the protocol can be tested without an etcd, and so that the
// parsers can be fed hostile input.
//
// What the gateway (etcd 3.4, grpc-gateway's jsonpb) does, as relied on here:
//   - keys and values are base64 (standard alphabet, padded);
//   - int64 fields come back as JSON strings ("revision":"12"); numbers are
//     accepted too, and requests send strings, since lease ids exceed 2^53;
//   - fields holding their default value are left out: no "kvs" when nothing
//     matched, no "succeeded" when a txn failed, no "TTL" when a kept-alive
//     lease is gone, no "type" for a PUT watch event;
//   - a failed unary call is {"error":"...","message":"...","code":<gRPC>},
//     with a non-200 status; a failure inside a stream (watch, keepalive) is
//     a message {"error":{"grpc_code":<gRPC>,"message":"...",...}};
//   - streamed calls answer one JSON object per message, each ending in a
//     newline, inside a chunked response. A keepalive request yields one
//     message and the response ends; a watch never ends on its own.
//
// Parsers never throw on malformed input: whatever does not have the
// expected shape is errc::protocol_error.

#include <corokv/error.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::etcd {

template <class T>
using result = std::pair<std::error_code, T>;

struct key_value {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
  friend bool operator==(const key_value&, const key_value&) = default;
};

struct range_result {
  std::vector<key_value> kvs;  // in key order
  std::int64_t revision = 0;   // the store's revision when the range was served
};

struct lease_grant {
  std::int64_t id = 0;
  std::int64_t ttl = 0;  // seconds, as granted (etcd may raise a short TTL to its minimum)
};

struct create_result {
  bool created = false;
  // The store's revision after the call: when created, the key's
  // create_revision (the txn's put is the revision's only change).
  std::int64_t revision = 0;
  std::optional<key_value> existing;  // when not created: the key as it is
};

struct watch_event {
  enum kind { put, del };
  kind type = put;
  key_value kv;  // for del, only key and mod_revision are set
};

struct watch_message {
  std::int64_t revision = 0;  // 0 in a cancellation message
  bool created = false;       // the first message of a watch, before any event
  bool canceled = false;      // etcd ended the watch; no message follows
  std::int64_t compact_revision = 0;  // when canceled for compaction: the oldest revision left
  std::vector<watch_event> events;
};

namespace gateway {

// The gateway's paths, one per call corokv makes.
inline constexpr std::string_view range_path = "/v3/kv/range";
inline constexpr std::string_view put_path = "/v3/kv/put";
inline constexpr std::string_view txn_path = "/v3/kv/txn";
inline constexpr std::string_view delete_range_path = "/v3/kv/deleterange";
inline constexpr std::string_view lease_grant_path = "/v3/lease/grant";
inline constexpr std::string_view lease_keep_alive_path = "/v3/lease/keepalive";
inline constexpr std::string_view lease_revoke_path = "/v3/lease/revoke";
inline constexpr std::string_view watch_path = "/v3/watch";

// ---------------------------------------------------------------- base64

inline std::string base64_encode(std::string_view in) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])); };
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += alphabet[v >> 6 & 63];
    out += alphabet[v & 63];
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    const std::uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += rest == 2 ? alphabet[v >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

// Standard alphabet with padding, as the gateway writes it; anything else
// (missing padding, stray characters, whitespace) is refused.
inline std::optional<std::string> base64_decode(std::string_view in) {
  static constexpr auto table = [] {
    std::array<std::int8_t, 256> t{};
    t.fill(-1);
    constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (std::size_t i = 0; i < alphabet.size(); ++i)
      t[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
    return t;
  }();
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    // Padding: only in the last quartet, only in its last two places, and a
    // '=' in the third place needs one in the fourth.
    const std::size_t pad = !last ? 0 : in[i + 3] != '=' ? 0 : in[i + 2] == '=' ? 2 : 1;
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      if (k >= 4 - pad) {
        v <<= 6;
        continue;
      }
      const std::int8_t d = table[static_cast<unsigned char>(in[i + k])];
      if (d < 0) return std::nullopt;
      v = v << 6 | static_cast<std::uint32_t>(d);
    }
    out += static_cast<char>(v >> 16 & 0xff);
    if (pad < 2) out += static_cast<char>(v >> 8 & 0xff);
    if (pad < 1) out += static_cast<char>(v & 0xff);
  }
  return out;
}

// ---------------------------------------------------------------- requests

// The end of the range holding every key that starts with `prefix`: the
// prefix with its last byte below 0xff incremented (and what follows it
// dropped). "\0" when there is none such: to etcd, every key from `key` on.
inline std::string prefix_range_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last != 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

namespace detail {

// int64 as the gateway writes them: in a string, since JSON numbers lose
// precision above 2^53.
inline std::string int64_text(std::int64_t v) { return std::to_string(v); }

inline std::string dump(const nlohmann::json& j) { return j.dump(); }  // only ASCII: base64 and digits

}  // namespace detail

inline std::string range_request(std::string_view key) {
  return detail::dump({{"key", base64_encode(key)}});
}

// Every key under `prefix`, in key order. An empty prefix ranges over all
// keys (etcd refuses an empty key, so the range starts at "\0").
inline std::string range_prefix_request(std::string_view prefix) {
  const std::string_view from = prefix.empty() ? std::string_view("\0", 1) : prefix;
  return detail::dump({{"key", base64_encode(from)}, {"range_end", base64_encode(prefix_range_end(prefix))}});
}

inline std::string put_request(std::string_view key, std::string_view value, std::int64_t lease_id = 0) {
  return detail::dump(
      {{"key", base64_encode(key)}, {"value", base64_encode(value)}, {"lease", detail::int64_text(lease_id)}});
}

// One txn: if the key has never been created (create_revision 0, i.e. absent)
// put it, bound to the lease; otherwise read it, so that the loser learns
// the winner's value and revision in the same round trip.
inline std::string create_if_absent_request(std::string_view key, std::string_view value, std::int64_t lease_id) {
  const std::string k = base64_encode(key);
  nlohmann::json j;
  j["compare"] = nlohmann::json::array(
      {{{"target", "CREATE"}, {"result", "EQUAL"}, {"key", k}, {"create_revision", "0"}}});
  j["success"] = nlohmann::json::array(
      {{{"request_put",
         {{"key", k}, {"value", base64_encode(value)}, {"lease", detail::int64_text(lease_id)}}}}});
  j["failure"] = nlohmann::json::array({{{"request_range", {{"key", k}}}}});
  return detail::dump(j);
}

// One txn: delete the key only if it is still the incarnation created at
// `create_revision`, so that a stale owner cannot delete its successor's key.
inline std::string delete_if_created_at_request(std::string_view key, std::int64_t create_revision) {
  const std::string k = base64_encode(key);
  nlohmann::json j;
  j["compare"] = nlohmann::json::array({{{"target", "CREATE"},
                                         {"result", "EQUAL"},
                                         {"key", k},
                                         {"create_revision", detail::int64_text(create_revision)}}});
  j["success"] = nlohmann::json::array({{{"request_delete_range", {{"key", k}}}}});
  return detail::dump(j);
}

inline std::string lease_grant_request(std::int64_t ttl_seconds) {
  return detail::dump({{"TTL", detail::int64_text(ttl_seconds)}});
}
inline std::string lease_keep_alive_request(std::int64_t lease_id) {
  return detail::dump({{"ID", detail::int64_text(lease_id)}});
}
inline std::string lease_revoke_request(std::int64_t lease_id) {
  return detail::dump({{"ID", detail::int64_text(lease_id)}});
}

// start_revision 0: from the next change on; otherwise history from that
// revision is replayed first (if it has not been compacted away).
inline std::string watch_create_request(std::string_view key, std::int64_t start_revision) {
  return detail::dump({{"create_request",
                        {{"key", base64_encode(key)}, {"start_revision", detail::int64_text(start_revision)}}}});
}

// ---------------------------------------------------------------- responses

// A gRPC status code, as the gateway reports it, in corokv's terms. Only
// rpc_failed makes the client try another endpoint: it stands for "this
// member could not serve the call" (no leader, shutting down, overloaded).
inline errc error_from_grpc_code(std::int64_t code) {
  switch (code) {
    case 1: return errc::cancelled;          // CANCELLED
    case 3: return errc::invalid_argument;   // INVALID_ARGUMENT: empty key, bad lease TTL, ...
    case 4: return errc::timeout;            // DEADLINE_EXCEEDED
    case 5: return errc::not_found;          // NOT_FOUND: lease not found
    case 6: return errc::already_exists;     // ALREADY_EXISTS
    case 8: return errc::no_space;           // RESOURCE_EXHAUSTED: database space exceeded
    case 9: return errc::invalid_argument;   // FAILED_PRECONDITION
    case 11: return errc::invalid_argument;  // OUT_OF_RANGE: future or compacted revision
    default: return errc::rpc_failed;        // UNKNOWN, UNAVAILABLE, INTERNAL, ...
  }
}

namespace detail {

using json = nlohmann::json;

// The errc an error object stands for (unary or in-stream form); nullopt if
// `j` is no error object.
inline std::optional<errc> error_of(const json& j) {
  if (!j.is_object()) return std::nullopt;
  const auto e = j.find("error");
  if (e == j.end()) return std::nullopt;
  if (e->is_object()) {  // in a stream: {"error":{"grpc_code":N,...}}
    const auto c = e->find("grpc_code");
    if (c != e->end() && c->is_number_integer()) return error_from_grpc_code(c->get<std::int64_t>());
    return errc::rpc_failed;
  }
  const auto c = j.find("code");  // unary: {"error":"...","code":N}
  if (c != j.end() && c->is_number_integer()) return error_from_grpc_code(c->get<std::int64_t>());
  return std::nullopt;
}

// An int64 field: absent is 0 (the gateway leaves defaults out); a string of
// digits or an integer number; anything else fails.
inline bool get_int64(const json& obj, const char* name, std::int64_t& out) {
  out = 0;
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return true;
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    const char* first = s.data();
    const char* last = s.data() + s.size();
    const auto [end, ec] = std::from_chars(first, last, out);
    return ec == std::errc() && end == last && first != last;
  }
  if (it->is_number_unsigned()) {
    const auto v = it->get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
    out = static_cast<std::int64_t>(v);
    return true;
  }
  if (it->is_number_integer()) {
    out = it->get<std::int64_t>();
    return true;
  }
  return false;
}

inline bool get_bool(const json& obj, const char* name, bool& out) {
  out = false;
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_boolean()) return false;
  out = it->get<bool>();
  return true;
}

// A bytes field: base64 in a string; absent is empty.
inline bool get_bytes(const json& obj, const char* name, std::string& out) {
  out.clear();
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_string()) return false;
  auto decoded = base64_decode(it->get_ref<const std::string&>());
  if (!decoded) return false;
  out = std::move(*decoded);
  return true;
}

inline bool get_key_value(const json& j, key_value& kv) {
  return j.is_object() && get_bytes(j, "key", kv.key) && get_bytes(j, "value", kv.value) &&
         get_int64(j, "create_revision", kv.create_revision) && get_int64(j, "mod_revision", kv.mod_revision) &&
         get_int64(j, "version", kv.version) && get_int64(j, "lease", kv.lease);
}

inline bool get_kvs(const json& obj, std::vector<key_value>& out) {
  out.clear();
  const auto it = obj.find("kvs");
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_array()) return false;
  out.reserve(it->size());
  for (const auto& item : *it) {
    if (!get_key_value(item, out.emplace_back())) return false;
  }
  return true;
}

// The header's revision; every response carries a header.
inline bool get_header_revision(const json& obj, std::int64_t& revision) {
  const auto h = obj.find("header");
  return h != obj.end() && h->is_object() && get_int64(*h, "revision", revision);
}

// Parses `text` and runs `body(json) -> std::error_code` on it: malformed
// JSON, an exception from a type mismatch and a shape `body` refuses are all
// protocol_error; an error object is its errc.
template <class Body>
std::error_code parse_with(std::string_view text, Body&& body) {
  try {
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return errc::protocol_error;
    if (const auto e = error_of(j)) return *e;
    return body(j);
  } catch (const json::exception&) {
    return errc::protocol_error;
  }
}

// A streamed call's message: {"result":{...}}, or an in-stream error.
template <class Body>
std::error_code parse_stream_message(std::string_view text, Body&& body) {
  return parse_with(text, [&](const json& j) -> std::error_code {
    const auto r = j.find("result");
    if (r == j.end() || !r->is_object()) return errc::protocol_error;
    return body(*r);
  });
}

// A streamed response body holding exactly one message: its first line.
inline std::string_view first_line(std::string_view text) {
  const auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  text.remove_prefix(begin);
  return text.substr(0, text.find('\n'));
}

}  // namespace detail

// The errc a non-200 response's body stands for; protocol_error if the body
// is not an error object.
inline std::error_code parse_error(std::string_view text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (const auto e = detail::error_of(j)) return *e;
  } catch (const nlohmann::json::exception&) {
  }
  return errc::protocol_error;
}

inline result<range_result> parse_range(std::string_view text) {
  range_result out;
  const auto ec = detail::parse_with(text, [&](const detail::json& j) -> std::error_code {
    if (!detail::get_header_revision(j, out.revision) || !detail::get_kvs(j, out.kvs)) return errc::protocol_error;
    return {};
  });
  return {ec, ec ? range_result{} : std::move(out)};
}

// The revision the put made.
inline result<std::int64_t> parse_put(std::string_view text) {
  std::int64_t revision = 0;
  const auto ec = detail::parse_with(text, [&](const detail::json& j) -> std::error_code {
    if (!detail::get_header_revision(j, revision)) return errc::protocol_error;
    return {};
  });
  return {ec, ec ? 0 : revision};
}

inline result<create_result> parse_create_if_absent(std::string_view text) {
  create_result out;
  const auto ec = detail::parse_with(text, [&](const detail::json& j) -> std::error_code {
    if (!detail::get_header_revision(j, out.revision) || !detail::get_bool(j, "succeeded", out.created))
      return errc::protocol_error;
    if (out.created) return {};
    // The compare failed, so the key exists, and the failure branch's range
    // (same txn, same revision) must have found it.
    const auto responses = j.find("responses");
    if (responses == j.end() || !responses->is_array() || responses->size() != 1) return errc::protocol_error;
    const auto range = responses->front().find("response_range");
    if (range == responses->front().end() || !range->is_object()) return errc::protocol_error;
    std::vector<key_value> kvs;
    if (!detail::get_kvs(*range, kvs) || kvs.size() != 1) return errc::protocol_error;
    out.existing = std::move(kvs.front());
    return {};
  });
  return {ec, ec ? create_result{} : std::move(out)};
}

// Whether the key was deleted (it was the incarnation asked for).
inline result<bool> parse_delete_if_created_at(std::string_view text) {
  bool deleted = false;
  const auto ec = detail::parse_with(text, [&](const detail::json& j) -> std::error_code {
    std::int64_t revision = 0;
    if (!detail::get_header_revision(j, revision) || !detail::get_bool(j, "succeeded", deleted))
      return errc::protocol_error;
    return {};
  });
  return {ec, !ec && deleted};
}

inline result<lease_grant> parse_lease_grant(std::string_view text) {
  lease_grant out;
  const auto ec = detail::parse_with(text, [&](const detail::json& j) -> std::error_code {
    std::int64_t revision = 0;
    if (!detail::get_header_revision(j, revision) || !detail::get_int64(j, "ID", out.id) ||
        !detail::get_int64(j, "TTL", out.ttl) || out.id == 0 || out.ttl <= 0)
      return errc::protocol_error;
    return {};
  });
  return {ec, ec ? lease_grant{} : out};
}

// The lease's TTL after the renewal; not_found when the lease is gone (the
// gateway then answers with no TTL, not with an error).
inline result<std::int64_t> parse_lease_keep_alive(std::string_view text) {
  std::int64_t ttl = 0;
  const auto ec = detail::parse_stream_message(detail::first_line(text), [&](const detail::json& r) -> std::error_code {
    std::int64_t revision = 0, id = 0;
    if (!detail::get_header_revision(r, revision) || !detail::get_int64(r, "ID", id) ||
        !detail::get_int64(r, "TTL", ttl))
      return errc::protocol_error;
    return ttl > 0 ? std::error_code{} : make_error_code(errc::not_found);
  });
  return {ec, ec ? 0 : ttl};
}

inline std::error_code parse_lease_revoke(std::string_view text) {
  return detail::parse_with(text, [&](const detail::json& j) -> std::error_code {
    std::int64_t revision = 0;
    return detail::get_header_revision(j, revision) ? std::error_code{} : make_error_code(errc::protocol_error);
  });
}

// One line of the watch stream.
inline result<watch_message> parse_watch_message(std::string_view line) {
  watch_message out;
  const auto ec = detail::parse_stream_message(line, [&](const detail::json& r) -> std::error_code {
    using detail::json;
    if (!detail::get_header_revision(r, out.revision) || !detail::get_bool(r, "created", out.created) ||
        !detail::get_bool(r, "canceled", out.canceled) ||
        !detail::get_int64(r, "compact_revision", out.compact_revision))
      return errc::protocol_error;
    const auto events = r.find("events");
    if (events == r.end() || events->is_null()) return {};
    if (!events->is_array()) return errc::protocol_error;
    out.events.reserve(events->size());
    for (const json& e : *events) {
      if (!e.is_object()) return errc::protocol_error;
      watch_event& ev = out.events.emplace_back();
      const auto type = e.find("type");
      if (type == e.end() || type->is_null() || *type == "PUT" || *type == 0)
        ev.type = watch_event::put;
      else if (*type == "DELETE" || *type == 1)
        ev.type = watch_event::del;
      else
        return errc::protocol_error;
      const auto kv = e.find("kv");
      if (kv == e.end() || !detail::get_key_value(*kv, ev.kv)) return errc::protocol_error;
    }
    return {};
  });
  return {ec, ec ? watch_message{} : std::move(out)};
}

// ---------------------------------------------------------------- streams

// Cuts a streamed response body, delivered in arbitrary pieces (chunks, and
// reads within chunks), into its newline-terminated messages. Bounded: a
// line longer than max_line means a broken or hostile peer.
class line_splitter {
 public:
  static constexpr std::size_t default_max_line = 64 * 1024 * 1024;

  explicit line_splitter(std::size_t max_line = default_max_line) : max_line_(max_line) {}

  // False once the unfinished line is longer than max_line; the stream can
  // then not be resynchronised and should be dropped.
  bool append(std::string_view bytes) {
    const auto newline = bytes.rfind('\n');
    if (newline != std::string_view::npos) tail_ = buffer_.size() + newline + 1;
    buffer_.append(bytes);
    return buffer_.size() - tail_ <= max_line_;
  }

  // The next complete line, without its "\n" or "\r\n"; blank lines are
  // skipped. nullopt until a whole line has arrived.
  std::optional<std::string> next() {
    while (start_ < tail_) {
      const auto end = buffer_.find('\n', start_);
      std::string_view line(buffer_.data() + start_, end - start_);
      start_ = end + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
      std::string out(line);
      compact();
      return out;
    }
    compact();
    return std::nullopt;
  }

  // Bytes received and not yet returned as lines.
  std::size_t pending() const noexcept { return buffer_.size() - start_; }

 private:
  // Drops consumed bytes once they are the larger part of the buffer, so
  // that the buffer stays in proportion to one message.
  void compact() {
    if (start_ == 0 || start_ < buffer_.size() / 2) return;
    buffer_.erase(0, start_);
    tail_ -= start_;
    start_ = 0;
  }

  std::size_t max_line_;
  std::string buffer_;
  std::size_t start_ = 0;  // first byte not yet returned
  std::size_t tail_ = 0;   // one past the last '\n' received
};

}  // namespace gateway
}  // namespace corokv::etcd
