#pragma once
// The metadata endpoint of an embedded store: the metadata service runs in
// this process, and each call is a direct, thread-safe call into it (each
// operation's trait, wire/operations.hpp, says how the service serves it).
// Its awaitables complete without suspending. The remote endpoint (net/) offers
// the same member functions over a connection.
//
// Nodes registered through this endpoint live in this process, so they are
// registered as nodes that never expire for silence; they leave when their
// store is destroyed. Housekeeping rides on the calls: at most once per
// maintenance_interval a call first runs the service's maintain() (expired
// puts, reclaim after leases, eviction, silent remote nodes). No timer and no
// thread are needed, so an io_context with nothing else to do returns from
// run().

#include <corokv/client/metadata_calls.hpp>
#include <corokv/client/metadata_endpoint.hpp>
#include <corokv/meta/service.hpp>
#include <corokv/types.hpp>
#include <corokv/wire/operations.hpp>

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <memory>
#include <span>
#include <system_error>
#include <utility>

namespace corokv::client {

class embedded_metadata : public metadata_calls<embedded_metadata> {
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

  // Any operation (wire/operations.hpp), served here; the named calls
  // (metadata_calls.hpp) forward to it.
  template <class Op, class Out, class... Args>
    requires wire::per_item_operation<Op>
  result<std::error_code> call(std::span<Out> out, Args... args) {
    upkeep();
    co_return std::error_code(Op::serve(*service_, args..., out));
  }
  template <class Op, class... Args>
    requires(!wire::per_item_operation<Op>)
  result<wire::call_answer_t<Op>> call(Args... args) {
    upkeep();
    co_return Op::answer(Op::serve(*service_, std::move(args)...));
  }

  // Nodes of this process never expire for silence.
  result<std::error_code> register_node(node_id node) {
    upkeep();
    co_return service_->register_node(node, /*expires=*/false);
  }
  // Registers the node first (see register_node).
  result<std::pair<std::error_code, segment_id>> mount(node_id node, std::uint64_t size, segment_endpoints where,
                                                       segment_id requested,
                                                       storage_tier tier = storage_tier::memory, bool remount = false) {
    upkeep();
    if (const errc e = service_->register_node(node, /*expires=*/false); e != errc::success)
      co_return std::pair<std::error_code, segment_id>{e, 0};
    co_return wire::ops::mount_segment::answer(
        wire::ops::mount_segment::serve(*service_, node, size, std::move(where), requested, tier, remount));
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

}  // namespace corokv::client
