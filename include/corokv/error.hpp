#pragma once
// corokv's error codes, written once. COROKV_ERRORS is the table: each
// code's name, message, kind and Mooncake Store code. The enum, the
// messages, the error conditions (one per kind, plus per_key), Python's
// Status and the Mooncake mapping all follow from it; tests/error_test.cpp
// checks the documentation's errors table against it.
//
// Codes are registered with <system_error> under the category "corokv":
// internals pass std::error_code; the public API (operations' completion
// handlers, register_buffer, the results' ec()) gives corokv::error_code,
// which is boost::system::error_code, the type Asio's handlers take. The
// two convert into each other both ways and compare equal to errc values
// and to conditions alike.

#include <boost/system/error_code.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace corokv {

// Mooncake Store's ErrorCode numbers (mooncake-store/include/types.h) that
// corokv's codes map to, for the Mooncake-compatible Python surface.
#define COROKV_MOONCAKE_CODES(X)                                                                               \
  X(ok, 0) X(internal_error, -1) X(segment_not_found, -101) X(client_not_found, -103)                          \
  X(no_available_handle, -200) X(invalid_version, -300) X(invalid_key, -400) X(invalid_params, -600)           \
  X(object_not_found, -704) X(object_already_exists, -705) X(lease_expired, -707) X(transfer_fail, -800)       \
  X(rpc_fail, -900) X(rpc_timeout, -901)

// The table. A code's number is its position: statuses travel on the wire
// as that number, so codes are only ever appended. Kinds:
//   outcome     the store's answer about a key or the cluster (success too)
//   argument    the caller's input is wrong
//   connection  the network or a peer failed
//   internal    the operation itself ended: cancelled, or an exception
#define COROKV_ERRORS(X)                                                                                       \
  X(success, "success", outcome, ok)                                                                           \
  X(not_found, "key not found", outcome, object_not_found)                                                    \
  X(already_exists, "key already exists", outcome, object_already_exists)                                     \
  X(put_in_progress, "another put of this key is in progress", outcome, object_already_exists)                \
  X(lease_expired, "lease expired before the read completed, and the object or the replica read changed",     \
    outcome, lease_expired)                                                                                    \
  X(invalid_key, "invalid key (empty or longer than max_key_length)", argument, invalid_key)                  \
  X(duplicate_key, "key appears more than once in the batch", argument, invalid_params)                       \
  X(buffer_too_small, "buffer too small for the object", argument, invalid_params)                            \
  X(size_mismatch, "size does not match the object or the request", argument, invalid_params)                 \
  X(invalid_argument, "invalid argument", argument, invalid_params)                                           \
  X(no_space, "no space left in the segments, even after eviction", outcome, no_available_handle)             \
  X(replicas_unavailable, "fewer segments than requested replicas", outcome, no_available_handle)             \
  X(segment_not_found, "segment not found", outcome, segment_not_found)                                       \
  X(node_unknown, "node unknown to the metadata service", outcome, client_not_found)                          \
  X(transfer_failed, "data transfer failed", connection, transfer_fail)                                       \
  X(rpc_failed, "metadata request failed", connection, rpc_fail)                                              \
  X(timeout, "operation timed out", connection, rpc_timeout)                                                  \
  X(protocol_error, "protocol error", connection, rpc_fail)                                                   \
  X(cancelled, "operation cancelled", internal, internal_error)                                               \
  X(version_mismatch, "object version does not match", outcome, invalid_version)                              \
  X(internal_error, "an exception escaped the operation", internal, internal_error)                           \
  X(pool_exhausted, "the store's buffer pool has no room for the object", outcome, no_available_handle)

#define COROKV_ERROR_ENUMERATOR(name, ...) name,
#define COROKV_MOONCAKE_ENUMERATOR(name, value) name = value,

enum class errc : int { COROKV_ERRORS(COROKV_ERROR_ENUMERATOR) };

enum class mooncake_code : int { COROKV_MOONCAKE_CODES(COROKV_MOONCAKE_ENUMERATOR) };

// Error conditions: `ec == condition::connection` holds for every code of
// that kind, whichever error_code type carries it. per_key holds for every
// corokv failure: each describes what happened to every key of the call
// that gave it, so an operation that can still serve its other keys
// reports it per key. Other categories' errors (a system error, an
// exception's code) match none and fail the whole operation.
enum class condition : int { per_key = 1, outcome, argument, connection, internal };

}  // namespace corokv

template <>
struct std::is_error_code_enum<corokv::errc> : std::true_type {};

template <>
struct std::is_error_condition_enum<corokv::condition> : std::true_type {};

namespace corokv {

constexpr std::string_view name_of(condition c) noexcept {
  switch (c) {
    case condition::per_key: return "per_key";
    case condition::outcome: return "outcome";
    case condition::argument: return "argument";
    case condition::connection: return "connection";
    case condition::internal: return "internal";
  }
  return "unknown";
}

struct error_entry {
  errc code;
  std::string_view name;     // as C++ spells it; Python's Status member is the same in capitals
  std::string_view message;  // what ec.message() says
  condition kind;  // the condition naming the code's kind
  mooncake_code mooncake;  // the code the Mooncake-compatible surface answers
};

struct mooncake_entry {
  mooncake_code code;
  std::string_view name;  // Mooncake's spelling is the same in capitals
};

#define COROKV_ERROR_ENTRY(name, message, kind, mooncake) \
  error_entry{errc::name, #name, message, condition::kind, mooncake_code::mooncake},
#define COROKV_MOONCAKE_ENTRY(name, value) mooncake_entry{mooncake_code::name, #name},

inline constexpr std::array error_table{COROKV_ERRORS(COROKV_ERROR_ENTRY)};
inline constexpr std::array mooncake_table{COROKV_MOONCAKE_CODES(COROKV_MOONCAKE_ENTRY)};

#undef COROKV_MOONCAKE_ENTRY
#undef COROKV_ERROR_ENTRY
#undef COROKV_MOONCAKE_ENUMERATOR
#undef COROKV_ERROR_ENUMERATOR
#undef COROKV_ERRORS
#undef COROKV_MOONCAKE_CODES

// The highest code: decoders accept statuses up to it.
inline constexpr errc last_errc = error_table.back().code;

// The table's entry for a code number, or nullptr outside the table.
constexpr const error_entry* find_error(int code) noexcept {
  return code >= 0 && static_cast<std::size_t>(code) < error_table.size() ? &error_table[static_cast<std::size_t>(code)]
                                                                           : nullptr;
}

// The public API's error type (see the top of this file).
using error_code = boost::system::error_code;

namespace detail {

class error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corokv"; }

  std::string message(int code) const override {
    const error_entry* e = find_error(code);
    return e ? std::string(e->message) : "unknown corokv error";
  }
};

class condition_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corokv.condition"; }

  std::string message(int c) const override {
    switch (static_cast<condition>(c)) {
      case condition::per_key: return "a corokv failure, standing for each key of the call";
      case condition::outcome: return "the store's answer about a key or the cluster";
      case condition::argument: return "invalid argument";
      case condition::connection: return "the network or a peer failed";
      case condition::internal: return "the operation itself ended";
    }
    return "unknown corokv condition";
  }

  bool equivalent(const std::error_code& ec, int c) const noexcept override;
};

}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::error_category instance;
  return instance;
}

inline const std::error_category& condition_category() noexcept {
  static const detail::condition_category instance;
  return instance;
}

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

inline std::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

// The one place that asks whether an error is corokv's own.
inline bool detail::condition_category::equivalent(const std::error_code& ec, int c) const noexcept {
  const error_entry* e = ec.category() == corokv::error_category() ? find_error(ec.value()) : nullptr;
  if (!e || e->code == errc::success) return false;
  return static_cast<condition>(c) == condition::per_key || static_cast<int>(e->kind) == c;
}

// Kept for programs that call them: `ec == condition::per_key`, and the
// code as a key's status (call only when the condition holds).
inline bool is_per_key_outcome(const std::error_code& ec) noexcept { return ec == condition::per_key; }
inline errc as_per_key_status(const std::error_code& ec) noexcept { return static_cast<errc>(ec.value()); }

}  // namespace corokv
