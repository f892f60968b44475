#pragma once
// Finds the leading master of a replicated cluster through etcd, for
// remote_metadata (net/master_locator.hpp): the leader key's value is the
// leader's metadata address and its create revision the leader's term.
// next_leader() watches the key, so that a client moves to a new leader the
// moment it is elected rather than when its calls start failing.
//
// Its etcd clients live on a strand of their own: every call runs there
// (spawned onto it through detail::run_on, safe to cancel, and awaited),
// whatever executor the caller is on.

#include <corokv/detail/guarded_spawn.hpp>
#include <corokv/etcd/client.hpp>
#include <corokv/ha/etcd_url.hpp>
#include <corokv/net/master_locator.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <functional>
#include <memory>
#include <string>

namespace corokv::ha {

class leader_locator final : public net::master_locator, public std::enable_shared_from_this<leader_locator> {
 public:
  leader_locator(boost::asio::any_io_executor ex, cluster_address where, duration etcd_timeout = std::chrono::seconds(1))
      : strand_(boost::asio::make_strand(ex)),
        where_(std::move(where)),
        key_(where_.leader_key()),
        etcd_(strand_, {where_.endpoints, etcd_timeout}),
        watcher_(strand_, {where_.endpoints, etcd_timeout}) {}

  ~leader_locator() override { watcher_.cancel_watches(); }

  // The operations are named before the co_await: GCC 12 destroys
  // temporaries inside one twice.
  boost::asio::awaitable<std::pair<errc, net::located_master>> locate() override {
    auto op = locate_here(shared_from_this());
    auto on_strand = detail::run_on(strand_, std::move(op));
    co_return co_await std::move(on_strand);
  }

  boost::asio::awaitable<std::pair<errc, net::located_master>> next_leader(std::uint64_t term, duration within) override {
    auto op = next_leader_here(shared_from_this(), term, within);
    auto on_strand = detail::run_on(strand_, std::move(op));
    co_return co_await std::move(on_strand);
  }

  void cancel() override {
    boost::asio::post(strand_, [self = shared_from_this()] {
      self->cancelled_ = true;
      self->watcher_.cancel_watches();
      if (self->limit_) self->limit_->cancel();
    });
  }

 private:
  // On the strand from here on.
  static boost::asio::awaitable<std::pair<errc, net::located_master>> locate_here(std::shared_ptr<leader_locator> self) {
    auto [ec, found] = co_await self->etcd_.range(self->key_);
    if (ec) co_return std::pair{to_errc(ec), net::located_master{}};
    self->last_revision_ = found.revision;  // a watch for the next leader starts after it
    if (found.kvs.empty()) co_return std::pair{errc::not_found, net::located_master{}};
    co_return parse(found.kvs.front());
  }

  static boost::asio::awaitable<std::pair<errc, net::located_master>> next_leader_here(std::shared_ptr<leader_locator> self,
                                                                               std::uint64_t term, duration within) {
    if (self->cancelled_) co_return std::pair{errc::cancelled, net::located_master{}};
    // Already there (elected while we were not watching)?
    auto [e, now] = co_await locate_here(self);
    if (e == errc::success && now.term > term) co_return std::pair{errc::success, now};
    if (e != errc::success && e != errc::not_found) co_return std::pair{e, net::located_master{}};
    // Watch from just after what locate saw, until a newer leader or `within`.
    struct outcome {
      bool found = false;
      bool timed_out = false;
      net::located_master leader;
    };
    auto result = std::make_shared<outcome>();
    auto limit = std::make_shared<boost::asio::steady_timer>(self->strand_, within);
    self->limit_ = limit;
    limit->async_wait([self, result](boost::system::error_code ec) {
      if (ec) return;
      result->timed_out = true;
      self->watcher_.cancel_watches();
    });
    // Named, not a temporary inside the co_await: GCC 12 destroys such a
    // temporary twice.
    std::function<void(const etcd::watch_message&)> on_message = [self, result, term](const etcd::watch_message& m) {
      for (auto& ev : m.events) {
        if (ev.type != etcd::watch_event::put || result->found) continue;
        auto [pe, leader] = parse(ev.kv);
        if (pe == errc::success && leader.term > term) {
          result->found = true;
          result->leader = leader;
          self->watcher_.cancel_watches();
        }
      }
    };
    const std::error_code ended = co_await self->watcher_.watch(self->key_, self->last_revision_ + 1, on_message);
    limit->cancel();
    if (self->limit_ == limit) self->limit_.reset();
    if (result->found) co_return std::pair{errc::success, result->leader};
    if (self->cancelled_) co_return std::pair{errc::cancelled, net::located_master{}};
    if (result->timed_out) co_return std::pair{errc::timeout, net::located_master{}};
    co_return std::pair{ended ? to_errc(ended) : errc::rpc_failed, net::located_master{}};
  }

  static errc to_errc(const std::error_code& ec) {
    return ec == condition::per_key ? as_per_key_status(ec) : errc::rpc_failed;
  }

  static std::pair<errc, net::located_master> parse(const etcd::key_value& kv) {
    auto at = parse_etcd_endpoint(kv.value);
    if (!at || kv.create_revision <= 0) return {errc::protocol_error, {}};
    return {errc::success, net::located_master{at->host, at->port, static_cast<std::uint64_t>(kv.create_revision)}};
  }

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  cluster_address where_;
  std::string key_;
  etcd::client etcd_;
  etcd::client watcher_;
  // Strand state.
  std::int64_t last_revision_ = 0;
  std::shared_ptr<boost::asio::steady_timer> limit_;
  bool cancelled_ = false;
};

}  // namespace corokv::ha
