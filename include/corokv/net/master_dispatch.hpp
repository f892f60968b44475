#pragma once
// What a master does with one request frame, as a function with no I/O:
// a decoded header and its payload in, the response frame (or the reason
// to close the connection) out. master_server reads frames and awaits
// replication around it; the tests call it directly.
//
// The decisions, in order:
// - a payload that does not decode as its type's request is a protocol
//   error: the connection closes;
// - with a master_role (one of several replicated masters): a request
//   carrying a newer term tells the role that another master leads; a role
//   that may not answer (a follower, a fenced or deposed leader) has the
//   connection closed unanswered;
// - `follow` hands the connection to the role's replication (a lone master
//   has none: a protocol error); a replica_ack outside such a connection is
//   a protocol error;
// - a metadata operation is served by the service (wire/operations.hpp);
//   a data-plane request is refused as a call (invalid_argument), the
//   connection stays open; a response that cannot be encoded within the
//   limits is reported as a failed call, in the shape the client expects.
// The response's header carries the request's id and the role's term (0
// without a role); the server stamps the term again if it changes while
// the reply waits for replication.

#include <corokv/error.hpp>
#include <corokv/net/master_role.hpp>
#include <corokv/wire/frame.hpp>
#include <corokv/wire/messages.hpp>
#include <corokv/wire/operations.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

namespace corokv::net {

struct master_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t protocol_errors = 0;  // connections closed for a malformed frame
  std::uint64_t requests = 0;
  std::uint64_t refused = 0;  // connections closed unanswered: not the leader, fenced, or a newer term seen
  std::uint64_t accept_errors = 0;  // failed accepts (out of descriptors, ...), each followed by a growing wait
};

enum class dispatch_verdict {
  reply,   // send `out`
  close,   // close the connection unanswered (counted as a protocol error or a refusal)
  follow,  // hand the connection to the role's replication, then close it
};

struct dispatch_result {
  dispatch_verdict verdict = dispatch_verdict::close;
  std::string_view follower;  // for follow: the follower's name, a view into the payload
};

// Serves one operation's request with `service`, appending the encoded
// response to `out`.
template <class Op, class Service>
errc serve_operation(Service& service, const typename Op::request& m, std::vector<std::byte>& out) {
  typename Op::response r;
  if constexpr (wire::per_item_operation<Op>) {
    r.results.resize(wire::items_of(m));
    r.status = std::apply([&](auto&&... a) { return Op::serve(service, a..., std::span(r.results)); },
                          Op::arguments(m));
    if (r.status != errc::success) r.results.clear();
  } else {
    r = std::apply([&](auto&&... a) { return Op::serve(service, a...); }, Op::arguments(m));
  }
  return wire::encode(r, out);
}

// The response a request of `type` expects, failed as a whole with `e`.
inline errc encode_failure(wire::message_type type, errc e, std::vector<std::byte>& out) {
  wire::response r = wire::empty_response(type);
  return std::visit(
      [&](auto& m) {
        m.status = e;
        return wire::encode(m, out);
      },
      r);
}

namespace detail {

// The decisions of dispatch_request for a decoded request of message M.
template <class M, class Service>
dispatch_result answer(Service& service, master_role* role, const wire::limits& lim, const wire::frame_header& h,
                       const typename M::request& m, std::vector<std::byte>& out, master_stats& stats) {
  ++stats.requests;
  if (role && h.term > role->term()) role->newer_term_seen(h.term);
  if (role && !role->may_answer()) {
    ++stats.refused;
    return {};
  }
  errc encoded = errc::success;
  out.assign(wire::header_size, std::byte{0});
  if constexpr (std::is_same_v<M, wire::follow_message>) {
    if (!role) {
      ++stats.protocol_errors;  // a follower of a lone master: nothing to follow
      return {};
    }
    return {dispatch_verdict::follow, m.name};
  } else if constexpr (std::is_same_v<M, wire::replica_ack_message>) {
    ++stats.protocol_errors;  // only on a follow connection
    return {};
  } else if constexpr (wire::metadata_operations::contains<M>) {
    encoded = serve_operation<M>(service, m, out);
  } else {
    // Well-formed, but for a data server: refused as a call, the
    // connection stays open.
    encoded = encode_failure(h.type, errc::invalid_argument, out);
  }
  if (encoded != errc::success || out.size() - wire::header_size > lim.max_payload) {
    // A response we cannot encode (over the limits): a failed call, in the
    // shape the client expects.
    out.resize(wire::header_size);
    encode_failure(h.type, errc::invalid_argument, out);
  }
  const auto header = wire::encode_header({h.type, true, h.request_id,
                                           static_cast<std::uint32_t>(out.size() - wire::header_size),
                                           role ? role->term() : 0});
  std::copy(header.begin(), header.end(), out.begin());
  return {dispatch_verdict::reply, {}};
}

}  // namespace detail

// One request frame (its header accepted by wire::decode_header) in; `out`
// becomes the whole response frame when the verdict is reply. `role` is
// null for a lone master; `stats` counts the request, and why a connection
// closes.
template <class Service>
dispatch_result dispatch_request(Service& service, master_role* role, const wire::limits& lim,
                                 const wire::frame_header& h, std::span<const std::byte> payload,
                                 std::vector<std::byte>& out, master_stats& stats) {
  dispatch_result result;
  bool decoded = false;
  wire::visit_message(h.type, [&]<class M>(M) {
    typename M::request m;
    std::span<const std::byte> trailing;
    if (wire::decode(payload, m, trailing, lim) != errc::success) return;
    decoded = true;
    result = detail::answer<M>(service, role, lim, h, m, out, stats);
  });
  if (!decoded) ++stats.protocol_errors;
  return result;
}

}  // namespace corokv::net
