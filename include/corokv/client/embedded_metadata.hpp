#pragma once
// The metadata endpoint of an embedded store: the metadata service runs in
// this process, and each call is a direct, thread-safe call into it. Its
// awaitables complete without suspending. The remote endpoint (net/) offers
// the same member functions over a connection.
//
// Housekeeping rides on the calls: at most once per maintenance_interval a
// call first heartbeats the nodes registered through this endpoint (they live
// as long as this process) and runs the service's maintain(). No timer and no
// thread are needed, so an io_context with nothing else to do returns from
// run().

#include <corokv/meta/service.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv {

class embedded_metadata {
 public:
  explicit embedded_metadata(std::shared_ptr<meta::service> service = std::make_shared<meta::service>(),
                             duration maintenance_interval = std::chrono::milliseconds(100))
      : service_(std::move(service)), interval_(maintenance_interval) {}

  embedded_metadata(embedded_metadata&& other) noexcept
      : service_(std::move(other.service_)), interval_(other.interval_), nodes_(std::move(other.nodes_)) {}

  meta::service& service() const noexcept { return *service_; }
  const std::shared_ptr<meta::service>& shared_service() const noexcept { return service_; }

  template <class T>
  using result = boost::asio::awaitable<T>;

  result<std::error_code> register_node(node_id node) {
    upkeep();
    const errc e = service_->register_node(node);
    if (e == errc::success) remember(node);
    co_return e;
  }

  result<std::pair<std::error_code, segment_id>> mount(node_id node, std::uint64_t size, segment_endpoints where,
                                                       segment_id requested) {
    upkeep();
    auto r = service_->mount_segment(node, size, std::move(where), requested);
    if (r.status == errc::success) remember(node);
    co_return std::pair<std::error_code, segment_id>{r.status, r.id};
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
  result<std::error_code> validate(key_span keys, std::span<const version_t> versions, std::span<errc> out) {
    upkeep();
    co_return service_->validate(keys, versions, out);
  }

  // Synchronous, for a store's destructor: the node leaves, its segments are
  // unmounted and its pending puts revoked.
  void leave(node_id node) noexcept {
    service_->unregister_node(node);
    std::lock_guard lock(nodes_mu_);
    std::erase(nodes_, node);
  }

 private:
  void remember(node_id node) {
    std::lock_guard lock(nodes_mu_);
    if (std::find(nodes_.begin(), nodes_.end(), node) == nodes_.end()) nodes_.push_back(node);
  }

  // Runs at most once per interval, by whichever call gets there first.
  void upkeep() {
    const auto now = clock_type::now().time_since_epoch().count();
    auto due = next_upkeep_.load(std::memory_order_relaxed);
    if (now < due || !next_upkeep_.compare_exchange_strong(due, now + interval_.count())) return;
    {
      std::lock_guard lock(nodes_mu_);
      for (node_id n : nodes_) service_->heartbeat(n);
    }
    service_->maintain();
  }

  std::shared_ptr<meta::service> service_;
  duration interval_;
  std::atomic<duration::rep> next_upkeep_{0};
  std::mutex nodes_mu_;
  std::vector<node_id> nodes_;
};

}  // namespace corokv
