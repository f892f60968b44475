#pragma once
// Every message type, declared once: for each metadata operation a trait
// that names its message type, its request and response, how a call's
// arguments become the request and back, and how the metadata service
// serves it. From these follow the message set by type (the request and
// response variants, decode_request/decode_response), the master's
// dispatch (net/master_dispatch.hpp), the remote endpoint's call
// (net/remote_metadata.hpp) and the embedded endpoint's call
// (client/embedded_metadata.hpp).
//
// A trait of a metadata operation has
//   type, request, response       the frame's type and its two payloads
//   to_request(args...)           a call's arguments as the request
//   arguments(request)            the request as the call's arguments
//   serve(service, args...)       the service's answer, in one of two shapes:
//     - answered per item: the call's last argument is an output span, one
//       result per key (or copy) sent; serve fills it and returns the
//       call's status; the response carries `results`;
//     - otherwise serve returns the response, and answer(response) is what
//       the endpoint's call returns.
// serve is a template over the service, so that this layer needs none.
//
// Adding an operation: its message_type (frame.hpp; numbers are the wire
// format and never reused), its trait here (and in `metadata_operations` below), the
// service method, and a named call in client/metadata_calls.hpp if the
// store calls it by name. The request and response structs are in
// messages.hpp when no existing one fits.
//
// Messages that are not metadata operations (the data plane's, and
// replication's) are listed by type, request and response only.

#include <corokv/error.hpp>
#include <corokv/types.hpp>
#include <corokv/wire/frame.hpp>
#include <corokv/wire/messages.hpp>
#include <corokv/wire/replication.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace corokv::wire {

namespace detail {
inline std::vector<std::string_view> views(key_span keys) {
  std::vector<std::string_view> out(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) out[i] = keys[i];
  return out;
}
template <class T>
std::vector<T> copied(std::span<const T> items) {
  return {items.begin(), items.end()};
}
}  // namespace detail

// A message type with its two payloads.
template <message_type Type, class Request, class Response>
struct message {
  static constexpr message_type type = Type;
  using request = Request;
  using response = Response;
};

namespace ops {

// ------------------------------------------------------------ nodes
struct register_node : message<message_type::register_node, node_request, status_response> {
  static request to_request(node_id node) { return {node}; }
  static auto arguments(const request& m) { return std::tuple{m.node}; }
  template <class Service>
  static response serve(Service& s, node_id node) {
    return {s.register_node(node)};
  }
  static std::error_code answer(const response& r) { return r.status; }
};

struct heartbeat : message<message_type::heartbeat, node_request, status_response> {
  static request to_request(node_id node) { return {node}; }
  static auto arguments(const request& m) { return std::tuple{m.node}; }
  template <class Service>
  static response serve(Service& s, node_id node) {
    return {s.heartbeat(node)};
  }
  static std::error_code answer(const response& r) { return r.status; }
};

struct unregister_node : message<message_type::unregister_node, node_request, status_response> {
  static request to_request(node_id node) { return {node}; }
  static auto arguments(const request& m) { return std::tuple{m.node}; }
  template <class Service>
  static response serve(Service& s, node_id node) {
    return {s.unregister_node(node)};
  }
  static std::error_code answer(const response& r) { return r.status; }
};

// ------------------------------------------------------------ segments
struct mount_segment : message<message_type::mount_segment, mount_request, mount_response> {
  static request to_request(node_id node, std::uint64_t size, segment_endpoints where, segment_id requested,
                            storage_tier tier = storage_tier::memory, bool remount = false) {
    return {node, size, requested, std::move(where), remount, tier};
  }
  static auto arguments(const request& m) { return std::tuple{m.node, m.size, m.endpoints, m.requested, m.tier, m.remount}; }
  template <class Service>
  static response serve(Service& s, node_id node, std::uint64_t size, segment_endpoints where, segment_id requested,
                        storage_tier tier = storage_tier::memory, bool remount = false) {
    const auto r = s.mount_segment(node, size, std::move(where), requested, remount, tier);
    return {r.status, r.id};
  }
  static std::pair<std::error_code, segment_id> answer(const response& r) { return {r.status, r.id}; }
};

struct unmount_segment : message<message_type::unmount_segment, unmount_request, status_response> {
  static request to_request(segment_id segment) { return {segment}; }
  static auto arguments(const request& m) { return std::tuple{m.segment}; }
  template <class Service>
  static response serve(Service& s, segment_id segment) {
    return {s.unmount_segment(segment)};
  }
  static std::error_code answer(const response& r) { return r.status; }
};

struct list_segments : message<message_type::list_segments, list_segments_request, segments_response> {
  static request to_request() { return {}; }
  static auto arguments(const request&) { return std::tuple{}; }
  template <class Service>
  static response serve(Service& s) {
    return {errc::success, s.segments()};
  }
  static std::pair<std::error_code, std::vector<segment_descriptor>> answer(response&& r) {
    return {r.status, std::move(r.segments)};
  }
};

// ------------------------------------------------------------ objects
struct put_start : message<message_type::put_start, put_start_request, put_start_response> {
  static request to_request(key_span keys, std::span<const std::uint64_t> sizes, put_options opts, node_id writer) {
    return {detail::views(keys), detail::copied(sizes), static_cast<std::uint8_t>(opts.replicas), writer};
  }
  static auto arguments(const request& m) {
    return std::tuple{key_span(m.keys), std::span<const std::uint64_t>(m.sizes), put_options{m.replicas}, m.writer};
  }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<const std::uint64_t> sizes, put_options opts, node_id writer,
                    std::span<put_start_result> out) {
    return s.put_start(keys, sizes, opts, writer, out);
  }
};

struct put_end : message<message_type::put_end, versioned_keys_request, statuses_response> {
  static request to_request(key_span keys, std::span<const version_t> versions) {
    return {detail::views(keys), detail::copied(versions)};
  }
  static auto arguments(const request& m) { return std::tuple{key_span(m.keys), std::span<const version_t>(m.versions)}; }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    return s.put_end(keys, versions, out);
  }
};

struct put_revoke : message<message_type::put_revoke, versioned_keys_request, statuses_response> {
  static request to_request(key_span keys, std::span<const version_t> versions) {
    return {detail::views(keys), detail::copied(versions)};
  }
  static auto arguments(const request& m) { return std::tuple{key_span(m.keys), std::span<const version_t>(m.versions)}; }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    return s.put_revoke(keys, versions, out);
  }
};

struct query : message<message_type::query, query_request, query_response> {
  static request to_request(key_span keys, duration ttl) { return {detail::views(keys), ttl.count()}; }
  static auto arguments(const request& m) { return std::tuple{key_span(m.keys), duration(m.ttl_ns)}; }
  template <class Service>
  static errc serve(Service& s, key_span keys, duration ttl, std::span<query_result> out) {
    return s.query(keys, ttl, out);
  }
};

struct exist : message<message_type::exist, keys_request, statuses_response> {
  static request to_request(key_span keys) { return {detail::views(keys)}; }
  static auto arguments(const request& m) { return std::tuple{key_span(m.keys)}; }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<errc> out) {
    return s.exist(keys, out);
  }
};

struct exist_prefix : message<message_type::exist_prefix, keys_request, prefix_response> {
  static request to_request(key_span keys) { return {detail::views(keys)}; }
  static auto arguments(const request& m) { return std::tuple{key_span(m.keys)}; }
  template <class Service>
  static response serve(Service& s, key_span keys) {
    return {errc::success, s.exist_prefix(keys)};
  }
  static std::pair<std::error_code, prefix_result> answer(const response& r) { return {r.status, r.result}; }
};

struct remove : message<message_type::remove, keys_request, statuses_response> {
  static request to_request(key_span keys) { return {detail::views(keys)}; }
  static auto arguments(const request& m) { return std::tuple{key_span(m.keys)}; }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<errc> out) {
    return s.remove(keys, out);
  }
};

struct remove_all : message<message_type::remove_all, remove_all_request, count_response> {
  static request to_request() { return {}; }
  static auto arguments(const request&) { return std::tuple{}; }
  template <class Service>
  static response serve(Service& s) {
    return {errc::success, s.remove_all()};
  }
  static std::pair<std::error_code, std::uint64_t> answer(const response& r) { return {r.status, r.count}; }
};

// Reads that finished after their lease (meta::service::validate).
struct validate : message<message_type::validate, validate_request, statuses_response> {
  static request to_request(key_span keys, std::span<const version_t> versions,
                            std::span<const replica_descriptor> read_from) {
    return {detail::views(keys), detail::copied(versions), detail::copied(read_from)};
  }
  static auto arguments(const request& m) {
    return std::tuple{key_span(m.keys), std::span<const version_t>(m.versions),
                      std::span<const replica_descriptor>(m.read_from)};
  }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<const version_t> versions,
                    std::span<const replica_descriptor> read_from, std::span<errc> out) {
    return s.validate(keys, versions, read_from, out);
  }
};

// ------------------------------------------------------------ the disk tier
struct demote_start : message<message_type::demote_start, demote_start_request, demotions_response> {
  static request to_request(node_id node, std::size_t max_objects, std::uint64_t max_bytes,
                            std::uint64_t saved_through, std::uint64_t offered) {
    return {node, static_cast<std::uint32_t>(std::min<std::size_t>(max_objects, UINT32_MAX)), max_bytes, saved_through,
            offered};
  }
  static auto arguments(const request& m) {
    return std::tuple{m.node, std::size_t{m.max_objects}, m.max_bytes, m.saved_through, m.offered};
  }
  template <class Service>
  static response serve(Service& s, node_id node, std::size_t max_objects, std::uint64_t max_bytes,
                        std::uint64_t saved_through, std::uint64_t offered) {
    response r;
    r.status = s.demote_start(node, max_objects, max_bytes, saved_through, offered, r.work);
    return r;
  }
  // A failed call hands out no work.
  static std::pair<std::error_code, demotion_work> answer(response&& r) {
    if (r.status != errc::success) return {r.status, {}};
    return {std::error_code{}, std::move(r.work)};
  }
};

struct demote_end : message<message_type::demote_end, demote_end_request, statuses_response> {
  static request to_request(key_span keys, std::span<const version_t> versions, std::span<const errc> copied) {
    return {detail::views(keys), detail::copied(versions), detail::copied(copied)};
  }
  static auto arguments(const request& m) {
    return std::tuple{key_span(m.keys), std::span<const version_t>(m.versions), std::span<const errc>(m.copied)};
  }
  template <class Service>
  static errc serve(Service& s, key_span keys, std::span<const version_t> versions, std::span<const errc> copied,
                    std::span<errc> out) {
    return s.demote_end(keys, versions, copied, out);
  }
};

struct adopt_disk_copies : message<message_type::adopt_disk_copies, adopt_request, statuses_response> {
  static request to_request(node_id node, std::span<const disk_copy> copies) { return {node, detail::copied(copies)}; }
  static auto arguments(const request& m) { return std::tuple{m.node, std::span<const disk_copy>(m.copies)}; }
  template <class Service>
  static errc serve(Service& s, node_id node, std::span<const disk_copy> copies, std::span<errc> out) {
    return s.adopt_disk_copies(node, copies, out);
  }
};

}  // namespace ops

// ------------------------------------------------------------ not metadata operations
// Served by a data server (net/data_server.hpp); a master refuses them as a
// call.
using data_read_message = message<message_type::data_read, data_read_request, data_read_response>;
using data_write_message = message<message_type::data_write, data_write_request, statuses_response>;
using rdma_connect_message = message<message_type::rdma_connect, rdma_connect_request, rdma_connect_response>;
// Replication: `follow` hands a master's connection to its replication;
// an ack travels only on such a connection and is never answered.
using follow_message = message<message_type::follow, follow_request, replication_batch>;
using replica_ack_message = message<message_type::replica_ack, replica_ack_request, status_response>;

// ------------------------------------------------------------ the sets
template <class... Messages>
struct message_list {
  static constexpr std::size_t size = sizeof...(Messages);

  // Calls f(M{}) for the message M of type `t`; false if none has it.
  template <class F>
  static bool visit(message_type t, F&& f) {
    return ((t == Messages::type ? (f(Messages{}), true) : false) || ...);
  }
  template <class M>
  static constexpr bool contains = (std::is_same_v<M, Messages> || ...);
};

using metadata_operations =
    message_list<ops::register_node, ops::heartbeat, ops::unregister_node, ops::mount_segment, ops::unmount_segment,
                 ops::list_segments, ops::put_start, ops::put_end, ops::put_revoke, ops::query, ops::exist,
                 ops::exist_prefix, ops::remove, ops::validate, ops::remove_all, ops::demote_start, ops::demote_end,
                 ops::adopt_disk_copies>;
using other_messages =
    message_list<data_read_message, data_write_message, rdma_connect_message, follow_message, replica_ack_message>;

// Whether an operation is answered per item (see the top of the file).
template <class Op>
concept per_item_operation = requires(typename Op::response r) { r.results; } && !requires { &Op::answer; };

// What an endpoint's call of the operation returns: the call's status for
// one answered per item (the results are in its output span), else what
// answer() makes of the response.
template <class Op>
struct call_answer {
  using type = std::error_code;
};
template <class Op>
  requires(!per_item_operation<Op>)
struct call_answer<Op> {
  using type = decltype(Op::answer(std::declval<typename Op::response>()));
};
template <class Op>
using call_answer_t = typename call_answer<Op>::type;

// How many items a per-item request sends (the length of its answer).
template <class Request>
std::size_t items_of(const Request& m) {
  if constexpr (requires { m.keys; })
    return m.keys.size();
  else
    return m.copies.size();
}

namespace detail {
template <class Variant, class T>
struct add_unique;
template <class... Ts, class T>
struct add_unique<std::variant<Ts...>, T> {
  using type = std::conditional_t<(std::is_same_v<T, Ts> || ...), std::variant<Ts...>, std::variant<Ts..., T>>;
};
template <class Variant, class... Ts>
struct unique_variant {
  using type = Variant;
};
template <class Variant, class T, class... Rest>
struct unique_variant<Variant, T, Rest...> {
  using type = typename unique_variant<typename add_unique<Variant, T>::type, Rest...>::type;
};
template <class A, class B>
struct payloads;
template <class... A, class... B>
struct payloads<message_list<A...>, message_list<B...>> {
  using requests = typename unique_variant<std::variant<>, typename A::request..., typename B::request...>::type;
  using responses = typename unique_variant<std::variant<>, typename A::response..., typename B::response...>::type;
  static constexpr bool every_type_once = [] {
    constexpr message_type all[] = {A::type..., B::type...};
    for (std::uint8_t t = 1; t <= last_message_type; ++t)
      if (std::count(std::begin(all), std::end(all), static_cast<message_type>(t)) != 1) return false;
    return std::size(all) == last_message_type;
  }();
};
using every_payload = payloads<metadata_operations, other_messages>;
}  // namespace detail

static_assert(detail::every_payload::every_type_once, "each message type has exactly one trait");

// ------------------------------------------------------------ by message type
// Every request and every response, one alternative per payload shape.
using request = detail::every_payload::requests;
using response = detail::every_payload::responses;

// Calls f(M{}) for the message (operation or other) of type `t`; false if
// no message has that type.
template <class F>
bool visit_message(message_type t, F&& f) {
  return metadata_operations::visit(t, f) || other_messages::visit(t, f);
}

// The request and response shapes of each message type.
inline request empty_request(message_type t) {
  request out = list_segments_request{};
  visit_message(t, [&]<class M>(M) { out.template emplace<typename M::request>(); });
  return out;
}

inline response empty_response(message_type t) {
  response out = status_response{};
  visit_message(t, [&]<class M>(M) { out.template emplace<typename M::response>(); });
  return out;
}

// What a server does with a frame whose header was accepted.
inline errc decode_request(message_type t, std::span<const std::byte> payload, request& out,
                           std::span<const std::byte>& trailing, const limits& lim = {}) {
  out = empty_request(t);
  return std::visit([&](auto& m) { return decode(payload, m, trailing, lim); }, out);
}

// What a client does with a response frame.
inline errc decode_response(message_type t, std::span<const std::byte> payload, response& out,
                            std::span<const std::byte>& trailing, const limits& lim = {}) {
  out = empty_response(t);
  return std::visit([&](auto& m) { return decode(payload, m, trailing, lim); }, out);
}

}  // namespace corokv::wire
