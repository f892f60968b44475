#pragma once
// The metadata endpoint of an embedded store: the metadata service runs in
// this process, and each call is a direct, thread-safe call into it. Its
// awaitables complete without suspending. The remote endpoint (net/) offers
// the same member functions over a connection.
//
// Nodes registered through this endpoint live in this process, so they are
// registered as nodes that never expire for silence; they leave when their
// store is destroyed. Housekeeping rides on the calls: at most once per
// maintenance_interval a call first runs the service's maintain() (expired
// puts, reclaim after leases, eviction, silent remote nodes). No timer and no
// thread are needed, so an io_context with nothing else to do returns from
// run().

#include <corokv/client/metadata_endpoint.hpp>
#include <corokv/meta/service.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <memory>
#include <span>
#include <system_error>
#include <utility>

namespace corokv {

class embedded_metadata {
 public:
  explicit embedded_metadata(std::shared_ptr<meta::service> service = std::make_shared<meta::service>(),
                             duration maintenance_interval = std::chrono::milliseconds(100))
      : service_(std::move(service)), interval_(maintenance_interval) {}

  embedded_metadata(embedded_metadata&& other) noexcept
      : service_(std::move(other.service_)), interval_(other.interval_) {}

  meta::service& service() const noexcept { return *service_; }
  const std::shared_ptr<meta::service>& shared_service() const noexcept { return service_; }

  template <class T>
  using result = boost::asio::awaitable<T>;

  result<std::error_code> register_node(node_id node) {
    upkeep();
    co_return service_->register_node(node, /*expires=*/false);
  }

  result<std::pair<std::error_code, segment_id>> mount(node_id node, std::uint64_t size, segment_endpoints where,
                                                       segment_id requested,
                                                       storage_tier tier = storage_tier::memory, bool remount = false) {
    upkeep();
    if (const errc e = service_->register_node(node, /*expires=*/false); e != errc::success)
      co_return std::pair<std::error_code, segment_id>{e, 0};
    auto r = service_->mount_segment(node, size, std::move(where), requested, remount, tier);
    co_return std::pair<std::error_code, segment_id>{r.status, r.id};
  }

  result<std::pair<std::error_code, demotion_work>> demote_start(node_id node, std::size_t max_objects,
                                                                  std::uint64_t max_bytes, std::uint64_t saved_through,
                                                                  std::uint64_t offered) {
    upkeep();
    demotion_work work;
    const errc e = service_->demote_start(node, max_objects, max_bytes, saved_through, offered, work);
    co_return std::pair<std::error_code, demotion_work>{e, std::move(work)};
  }
  result<std::error_code> unmount(segment_id segment) {
    upkeep();
    co_return service_->unmount_segment(segment);
  }
  result<std::error_code> adopt_disk_copies(node_id node, std::span<const disk_copy> copies, std::span<errc> out) {
    upkeep();
    co_return service_->adopt_disk_copies(node, copies, out);
  }
  result<std::error_code> demote_end(key_span keys, std::span<const version_t> versions, std::span<const errc> copied,
                                     std::span<errc> out) {
    upkeep();
    co_return service_->demote_end(keys, versions, copied, out);
  }

  result<std::error_code> put_start(key_span keys, std::span<const std::uint64_t> sizes, put_options opts,
                                    node_id writer, std::span<put_start_result> out) {
    upkeep();
    co_return service_->put_start(keys, sizes, opts, writer, out);
  }
  result<std::error_code> put_end(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    upkeep();
    co_return service_->put_end(keys, versions, out);
  }
  result<std::error_code> put_revoke(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    upkeep();
    co_return service_->put_revoke(keys, versions, out);
  }
  result<std::error_code> query(key_span keys, duration ttl, std::span<query_result> out) {
    upkeep();
    co_return service_->query(keys, ttl, out);
  }
  result<std::error_code> exist(key_span keys, std::span<errc> out) {
    upkeep();
    co_return service_->exist(keys, out);
  }
  result<std::pair<std::error_code, prefix_result>> exist_prefix(key_span keys) {
    upkeep();
    co_return std::pair<std::error_code, prefix_result>{{}, service_->exist_prefix(keys)};
  }
  result<std::error_code> remove(key_span keys, std::span<errc> out) {
    upkeep();
    co_return service_->remove(keys, out);
  }
  result<std::pair<std::error_code, std::uint64_t>> remove_all() {
    upkeep();
    co_return std::pair<std::error_code, std::uint64_t>{{}, service_->remove_all()};
  }
  result<std::error_code> validate(key_span keys, std::span<const version_t> versions,
                                   std::span<const replica_descriptor> read_from, std::span<errc> out) {
    upkeep();
    co_return service_->validate(keys, versions, read_from, out);
  }

  // Synchronous, for a store's destructor: the node leaves, its segments are
  // unmounted and its pending puts revoked.
  void leave(node_id node) noexcept { service_->unregister_node(node); }

 private:
  // Runs at most once per interval, by whichever call gets there first.
  void upkeep() {
    const auto now = clock_type::now().time_since_epoch().count();
    auto due = next_upkeep_.load(std::memory_order_relaxed);
    if (now < due || !next_upkeep_.compare_exchange_strong(due, now + interval_.count())) return;
    service_->maintain();
  }

  std::shared_ptr<meta::service> service_;
  duration interval_;
  std::atomic<duration::rep> next_upkeep_{0};
};

static_assert(metadata_endpoint<embedded_metadata>);
static_assert(tiering_endpoint<embedded_metadata>);

}  // namespace corokv
