#pragma once
// corokv's error codes. One enum, registered with <system_error> under the
// category "corokv", so a per-key status converts to std::error_code and whole
// operations can report the same codes through boost::system::error_code.

#include <string>
#include <system_error>

namespace corokv {

enum class errc : int {
  success = 0,
  not_found,
  already_exists,
  put_in_progress,
  lease_expired,
  invalid_key,
  duplicate_key,
  buffer_too_small,
  size_mismatch,
  invalid_argument,
  no_space,
  replicas_unavailable,
  segment_not_found,
  node_unknown,
  transfer_failed,
  rpc_failed,
  timeout,
  protocol_error,
  cancelled,
  version_mismatch,
  internal_error,
  pool_exhausted,
};

// The highest code: decoders accept statuses up to it.
inline constexpr errc last_errc = errc::pool_exhausted;

namespace detail {

class error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corokv"; }

  std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
      case errc::success: return "success";
      case errc::not_found: return "key not found";
      case errc::already_exists: return "key already exists";
      case errc::put_in_progress: return "another put of this key is in progress";
      case errc::lease_expired: return "lease expired before the read completed, and the object or the replica read changed";
      case errc::invalid_key: return "invalid key (empty or longer than max_key_length)";
      case errc::duplicate_key: return "key appears more than once in the batch";
      case errc::buffer_too_small: return "buffer too small for the object";
      case errc::size_mismatch: return "size does not match the object or the request";
      case errc::invalid_argument: return "invalid argument";
      case errc::no_space: return "no space left in the segments, even after eviction";
      case errc::replicas_unavailable: return "fewer segments than requested replicas";
      case errc::segment_not_found: return "segment not found";
      case errc::node_unknown: return "node unknown to the metadata service";
      case errc::transfer_failed: return "data transfer failed";
      case errc::rpc_failed: return "metadata request failed";
      case errc::timeout: return "operation timed out";
      case errc::protocol_error: return "protocol error";
      case errc::cancelled: return "operation cancelled";
      case errc::version_mismatch: return "object version does not match";
      case errc::internal_error: return "an exception escaped the operation";
      case errc::pool_exhausted: return "the store's buffer pool has no room for the object";
    }
    return "unknown corokv error";
  }
};

}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::error_category instance;
  return instance;
}

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// Whether a failure of a whole call may stand for each key it concerned.
// corokv's own codes (a lost connection is rpc_failed, a silent master
// timeout) describe what happened to every key of the call, so an operation
// that can still serve its other keys reports them per key. Anything else
// (a system error, an exception's code) fails the whole operation.
inline bool is_per_key_outcome(const std::error_code& ec) noexcept {
  return ec && &ec.category() == &error_category();
}

// The per-key status a whole-call failure stands for; call only when
// is_per_key_outcome(ec) holds.
inline errc as_per_key_status(const std::error_code& ec) noexcept { return static_cast<errc>(ec.value()); }

}  // namespace corokv

template <>
struct std::is_error_code_enum<corokv::errc> : std::true_type {};
