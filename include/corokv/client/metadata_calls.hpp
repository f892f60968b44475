#pragma once
// The metadata endpoint's named calls (client/metadata_endpoint.hpp),
// written once for every endpoint: each forwards to the endpoint's generic
// call<Op>, which does what the endpoint does with any operation
// (wire/operations.hpp): the embedded endpoint serves it in this process,
// the remote one sends its request. An endpoint with more to do for one
// operation (remembering a node for rejoin, say) declares that call itself,
// which hides the one here.
//
// Endpoint::call<Op> takes, for an operation answered per item, the output
// span first and then the call's other arguments; for any other, the
// call's arguments; it returns an awaitable of what the named call returns.

#include <corokv/types.hpp>
#include <corokv/wire/operations.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::client {

template <class Endpoint>
class metadata_calls {
 public:
  template <class T>
  using result = boost::asio::awaitable<T>;

  result<std::error_code> register_node(node_id node) { return self().template call<wire::ops::register_node>(node); }
  result<std::pair<std::error_code, segment_id>> mount(node_id node, std::uint64_t size, segment_endpoints where,
                                                       segment_id requested,
                                                       storage_tier tier = storage_tier::memory, bool remount = false) {
    return self().template call<wire::ops::mount_segment>(node, size, std::move(where), requested, tier, remount);
  }
  result<std::error_code> unmount(segment_id segment) {
    return self().template call<wire::ops::unmount_segment>(segment);
  }
  // Every mounted segment and where it can be reached.
  result<std::pair<std::error_code, std::vector<segment_descriptor>>> list_segments() {
    return self().template call<wire::ops::list_segments>();
  }

  result<std::error_code> put_start(key_span keys, std::span<const std::uint64_t> sizes, put_options opts,
                                    node_id writer, std::span<put_start_result> out) {
    return self().template call<wire::ops::put_start>(out, keys, sizes, opts, writer);
  }
  result<std::error_code> put_end(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    return self().template call<wire::ops::put_end>(out, keys, versions);
  }
  result<std::error_code> put_revoke(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    return self().template call<wire::ops::put_revoke>(out, keys, versions);
  }
  result<std::error_code> query(key_span keys, duration ttl, std::span<query_result> out) {
    return self().template call<wire::ops::query>(out, keys, ttl);
  }
  result<std::error_code> exist(key_span keys, std::span<errc> out) {
    return self().template call<wire::ops::exist>(out, keys);
  }
  result<std::pair<std::error_code, prefix_result>> exist_prefix(key_span keys) {
    return self().template call<wire::ops::exist_prefix>(keys);
  }
  result<std::error_code> remove(key_span keys, std::span<errc> out) {
    return self().template call<wire::ops::remove>(out, keys);
  }
  result<std::pair<std::error_code, std::uint64_t>> remove_all() { return self().template call<wire::ops::remove_all>(); }
  result<std::error_code> validate(key_span keys, std::span<const version_t> versions,
                                   std::span<const replica_descriptor> read_from, std::span<errc> out) {
    return self().template call<wire::ops::validate>(out, keys, versions, read_from);
  }

  result<std::pair<std::error_code, demotion_work>> demote_start(node_id node, std::size_t max_objects,
                                                                  std::uint64_t max_bytes, std::uint64_t saved_through,
                                                                  std::uint64_t offered) {
    return self().template call<wire::ops::demote_start>(node, max_objects, max_bytes, saved_through, offered);
  }
  result<std::error_code> demote_end(key_span keys, std::span<const version_t> versions, std::span<const errc> copied,
                                     std::span<errc> out) {
    return self().template call<wire::ops::demote_end>(out, keys, versions, copied);
  }
  result<std::error_code> adopt_disk_copies(node_id node, std::span<const disk_copy> copies, std::span<errc> out) {
    return self().template call<wire::ops::adopt_disk_copies>(out, node, copies);
  }

 private:
  Endpoint& self() noexcept { return static_cast<Endpoint&>(*this); }
};

}  // namespace corokv::client
