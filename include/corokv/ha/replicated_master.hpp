#pragma once
// One of several corokv masters that take turns leading through etcd.
//
// - Leadership: each master holds an etcd lease (lease_ttl) and campaigns
//   by creating the cluster's leader key only if it is absent, bound to its
//   lease, with its metadata address as the value. The key's create revision
//   is the leader's term. Keep-alives renew the lease every lease_ttl / 3;
//   a leader that has not renewed in time stops answering fence_margin before
//   its lease could lapse in etcd, so no two masters ever answer in
//   overlapping terms (leadership.hpp), and then steps down.
// - Followers: every other master follows the leader (follower_link): a
//   snapshot, then every journal record in order, while it watches the
//   leader key. When the key is gone (the leader died or stepped down and
//   its lease ran out) they campaign; the winner promotes its copy to its
//   service (replica_state::promote, which holds every object's memory for
//   max_lease_ttl) and starts a replication hub in its new term.
// - Clients see only the leader: a follower, or a fenced leader, closes any
//   connection unanswered (master_server with this object as its role).
//
// Runs on the executor given at construction (one thread: the master
// server's).

#include <corokv/etcd/client.hpp>
#include <corokv/ha/etcd_url.hpp>
#include <corokv/ha/leadership.hpp>
#include <corokv/meta/replica_state.hpp>
#include <corokv/net/address.hpp>
#include <corokv/net/follower_link.hpp>
#include <corokv/net/master_role.hpp>
#include <corokv/net/master_server.hpp>
#include <corokv/net/replication_hub.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>

namespace corokv::ha {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct replicated_master_options {
  cluster_address cluster;
  std::string name;       // this master, in logs and metrics
  std::string advertise;  // HOST:PORT where clients reach this master's metadata port
  std::chrono::seconds lease_ttl{2};
  duration fence_margin = std::chrono::milliseconds(500);  // stop answering this long before the lease could lapse
  duration etcd_timeout = std::chrono::milliseconds(500);  // each etcd call
  duration retry = std::chrono::milliseconds(100);         // between attempts to reach a leader or etcd
  duration connect_timeout = std::chrono::seconds(1);
  net::replication_hub_options replication;
  meta::service_options service;
  std::function<void(const std::string&)> log;  // one line per role change (default: none)
};

struct replicated_master_stats {
  master_state state = master_state::candidate;
  std::uint64_t term = 0;
  std::uint64_t terms_led = 0;       // times this master became leader
  std::uint64_t step_downs = 0;      // times it stopped leading
  net::replication_hub_stats replication;  // while leading
  net::follower_link_stats following;      // while following
  std::uint64_t promoted_objects = 0;      // what its copy held when it last took over
};

class replicated_master final : public net::master_role, public std::enable_shared_from_this<replicated_master> {
 public:
  replicated_master(asio::any_io_executor ex, net::master_server& server, replicated_master_options options)
      : executor_(ex),
        server_(server),
        options_(std::move(options)),
        etcd_(ex, {options_.cluster.endpoints, options_.etcd_timeout}),
        watcher_(ex, {options_.cluster.endpoints, options_.etcd_timeout}),
        leadership_(options_.fence_margin),
        link_(std::make_shared<net::follower_link>(ex)),
        tick_(ex) {}

  // Starts campaigning and following. Call on the executor.
  void start() {
    server_.set_role(this);
    server_.set_service(std::make_shared<meta::service>(options_.service));  // answers nothing until it leads
    auto self = shared_from_this();
    asio::co_spawn(executor_, [self] { return self->run(); }, asio::detached);
    asio::co_spawn(executor_, [self] { return self->keep_lease(); }, asio::detached);
  }

  // Stops; a leader revokes its lease so that another master can lead at
  // once. Call on the executor.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    link_->stop();
    watcher_.cancel_watches();
    tick_.cancel();
    if (hub_) hub_->stop();
    // The role stays: a stopped master answers nothing (may_answer()), so
    // that revoking the lease below can never let two masters answer.
    if (lease_id_ != 0)
      asio::co_spawn(executor_, [self = shared_from_this(), id = lease_id_]() -> asio::awaitable<void> {
        co_await self->etcd_.revoke_lease(id);
      }, asio::detached);
  }

  replicated_master_stats stats() const {
    replicated_master_stats s;
    s.state = leadership_.state();
    s.term = leadership_.term();
    s.terms_led = leadership_.terms_led();
    s.step_downs = leadership_.step_downs();
    if (hub_) s.replication = hub_->stats();
    s.following = link_->stats();
    s.promoted_objects = promoted_objects_;
    return s;
  }

  // ------------------------------------------------------------ master_role
  std::uint64_t term() const override { return leadership_.term(); }
  bool may_answer() const override { return !stopped_ && hub_ && leadership_.may_answer(clock_type::now()); }
  void newer_term_seen(std::uint64_t term) override {
    if (leadership_.state() != master_state::leader || term <= leadership_.term()) return;
    leadership_.newer_term(term);
    say(fmt::format("a request carried term {} (ours {}): stepping down", term, leadership_.term()));
    tick_.cancel();  // the lead() loop notices at once
  }
  std::uint64_t position() const override { return hub_ ? hub_->position() : 0; }
  asio::awaitable<void> replicated(std::uint64_t position) override {
    auto hub = hub_;  // kept alive across the wait, even if we step down meanwhile
    if (hub) co_await hub->replicated(position);
  }
  asio::awaitable<void> serve_follower(std::shared_ptr<tcp::socket> socket, std::uint64_t request_id,
                                       std::string_view name) override {
    auto hub = hub_;
    if (hub) co_await hub->serve_follower(std::move(socket), request_id, name);
  }

 private:
  void say(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  asio::awaitable<void> pause(duration d) {
    asio::steady_timer t(executor_, d);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  // Grants a lease when there is none, then renews it every lease_ttl / 3.
  asio::awaitable<void> keep_lease() {
    const duration period = std::chrono::duration_cast<duration>(options_.lease_ttl) / 3;
    while (!stopped_) {
      const time_point sent = clock_type::now();
      if (lease_id_ == 0) {
        auto [ec, grant] = co_await etcd_.grant_lease(options_.lease_ttl);
        if (!ec && !stopped_) {
          lease_id_ = grant.id;
          leadership_.lease_renewed(sent, std::chrono::seconds(grant.ttl));
        }
      } else {
        const std::int64_t id = lease_id_;
        auto [ec, ttl] = co_await etcd_.keep_alive_once(id);
        if (id == lease_id_) {
          if (!ec && ttl > 0) {
            leadership_.lease_renewed(sent, std::chrono::seconds(ttl));
          } else if (ec == make_error_code(errc::not_found) || (!ec && ttl <= 0)) {
            say("lease lost in etcd");
            lease_id_ = 0;
            leadership_.lease_lost();
            tick_.cancel();
            continue;  // a new lease at once
          }
          // Otherwise etcd is unreachable: the lease runs down; lead() steps down in time.
        }
      }
      co_await pause(lease_id_ == 0 ? options_.retry : period);
    }
  }

  asio::awaitable<void> run() {
    const std::string key = options_.cluster.leader_key();
    while (!stopped_) {
      // The copy can take over only if it holds a whole snapshot from the
      // newest leader known and everything that leader sent after it.
      const bool complete_copy = link_->holds_snapshot() && link_->snapshot_term() == leadership_.term();
      if (lease_id_ == 0 || !leadership_.lease_valid(clock_type::now())) {
        co_await pause(options_.retry);
        continue;
      }
      auto [ec, found] = co_await etcd_.range(key);
      if (ec) {
        co_await pause(options_.retry);
        continue;
      }
      if (found.kvs.empty()) {
        // No leader. The master with the most complete copy campaigns at
        // once; any other gives it a lease TTL's head start (and still
        // leads if it cannot).
        if (!co_await most_complete(complete_copy) && co_await leader_within(options_.lease_ttl)) continue;
        if (stopped_) break;
        const std::string address = options_.advertise;  // named: see follow()
        auto [cec, created] = co_await etcd_.create_if_absent(key, address, lease_id_);
        if (cec || stopped_) {
          co_await pause(options_.retry);
          continue;
        }
        if (created.created) {
          co_await lead(static_cast<std::uint64_t>(created.revision), complete_copy);
          continue;
        }
        found.kvs.push_back(*created.existing);
        found.revision = created.revision;
      }
      const etcd::key_value leader = found.kvs.front();
      if (leader.lease == lease_id_) {
        // Our own key from a lead we gave up (fenced or a newer term seen):
        // revoking the lease deletes it and lets the election run again.
        say("removing our stale leader key");
        const std::int64_t old = lease_id_;
        lease_id_ = 0;
        co_await etcd_.revoke_lease(old);
        continue;
      }
      co_await follow(leader, found.revision);
    }
  }

  // How far this master's copy goes: the term of the leader it copies and
  // the journal position applied, (0, 0) for no whole copy. Positions of
  // one term count the same journal, so they compare across followers.
  std::pair<std::uint64_t, std::uint64_t> copy_position(bool complete_copy) const {
    if (!complete_copy) return {0, 0};
    return {link_->snapshot_term(), link_->stats().applied};
  }

  // Publishes this master's copy position under /corokv/NAME/candidates/
  // (bound to its lease: a dead master's disappears), waits for the others
  // to publish theirs, and says whether none is further (ties: the lowest
  // name). A follower that lost its link while the leader went on with
  // others has applied less, so it does not race the one that kept up.
  asio::awaitable<bool> most_complete(bool complete_copy) {
    const auto mine = copy_position(complete_copy);
    const std::string prefix = "/corokv/" + options_.cluster.cluster + "/candidates/";
    const std::string my_key = prefix + options_.name;
    const std::string value = fmt::format("{}:{}", mine.first, mine.second);
    auto [pe, revision] = co_await etcd_.put(my_key, value, lease_id_);
    if (pe) co_return false;
    co_await pause(2 * options_.retry);
    auto [re, all] = co_await etcd_.range_prefix(prefix);
    if (re) co_return false;
    for (const auto& kv : all.kvs) {
      if (kv.key == my_key) continue;
      std::pair<std::uint64_t, std::uint64_t> theirs{0, 0};
      const auto colon = kv.value.find(':');
      if (colon == std::string::npos) continue;
      theirs.first = std::strtoull(kv.value.c_str(), nullptr, 10);
      theirs.second = std::strtoull(kv.value.c_str() + colon + 1, nullptr, 10);
      if (theirs > mine || (theirs == mine && kv.key < my_key)) co_return false;
    }
    co_return true;
  }

  // Whether a leader appears within `limit` (checked every `retry`): the
  // head start a less complete master gives the best one, which it follows
  // as soon as it leads.
  asio::awaitable<bool> leader_within(duration limit) {
    const std::string key = options_.cluster.leader_key();
    const time_point until = clock_type::now() + limit;
    while (!stopped_ && clock_type::now() < until) {
      co_await pause(options_.retry);
      auto [ec, found] = co_await etcd_.range(key);
      if (!ec && !found.kvs.empty()) co_return true;
    }
    co_return false;
  }

  // Follows `leader` until its key changes or the link ends.
  asio::awaitable<void> follow(const etcd::key_value& leader, std::int64_t revision) {
    const auto term = static_cast<std::uint64_t>(leader.create_revision);
    if (leadership_.state() != master_state::follower || leadership_.term() != term)
      say(fmt::format("following {} in term {}", leader.value, term));
    leadership_.follows(term, leader.value);
    boost::system::error_code rec;
    std::vector<tcp::endpoint> where;
    if (auto at = parse_etcd_endpoint(leader.value))  // the same HOST:PORT form
      where = net::resolve_now(at->host, at->port, rec);
    if (rec || where.empty()) {
      co_await pause(options_.retry);
      co_return;
    }
    // The watch ends the link as soon as the leader key changes.
    auto changed = std::make_shared<bool>(false);
    auto link = link_;
    std::function<void(const etcd::watch_message&)> on_message = [link, changed, term](const etcd::watch_message& m) {
      for (auto& e : m.events)
        if (e.type == etcd::watch_event::del || e.kv.create_revision != static_cast<std::int64_t>(term)) {
          *changed = true;
          link->stop();
        }
      if (m.canceled) link->stop();
    };
    asio::co_spawn(
        executor_,
        [self = shared_from_this(), on_message = std::move(on_message), revision]() -> asio::awaitable<void> {
          // Named, not temporaries inside the co_await: GCC 12 destroys those twice.
          const std::string key = self->options_.cluster.leader_key();
          auto callback = on_message;
          co_await self->watcher_.watch(key, revision + 1, std::move(callback));
        },
        asio::detached);
    co_await link_->follow(where.front(), options_.name, copy_, term, options_.connect_timeout);
    watcher_.cancel_watches();
    if (!*changed && !stopped_) co_await pause(options_.retry);  // the leader is unreachable: ask etcd again soon
  }

  // Leads in `term` until the lease can no longer be trusted or a newer
  // term is seen.
  asio::awaitable<void> lead(std::uint64_t term, bool complete_copy) {
    leadership_.won(term);
    meta::promote_report report;
    std::shared_ptr<meta::service> service;
    if (complete_copy)
      service = copy_.promote(options_.service, meta::steady_clock_source(), &report);
    else
      service = std::make_shared<meta::service>(options_.service);  // nothing to take over: nodes remount
    promoted_objects_ = report.objects;
    copy_.clear();
    link_->forget_snapshot();
    auto hub = std::make_shared<net::replication_hub>(executor_, service, options_.replication);
    hub->set_term(term);
    service->set_journal(hub.get());
    hub_ = hub;
    server_.set_service(service);
    say(fmt::format("leading in term {} ({} objects, {} segments and {} nodes taken over{})", term, report.objects,
                    report.segments, report.nodes,
                    report.refused ? fmt::format(", {} entries refused", report.refused) : std::string()));
    while (!stopped_ && leadership_.state() == master_state::leader) {
      if (leadership_.must_step_down(clock_type::now())) {
        say(fmt::format("lease not renewed in time: fenced, stepping down from term {}", term));
        leadership_.step_down();
        break;
      }
      tick_.expires_after(std::chrono::milliseconds(20));
      co_await tick_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    hub->stop();
    server_.drop_connections();
    server_.set_service(std::make_shared<meta::service>(options_.service));
    hub_.reset();
    service->set_journal(nullptr);
    if (!stopped_ && lease_id_ != 0) {
      // Our key goes with our lease: the next election need not wait for it
      // to run out (if etcd is unreachable, it runs out by itself).
      const std::int64_t old = lease_id_;
      lease_id_ = 0;
      co_await etcd_.revoke_lease(old);
    }
  }

  asio::any_io_executor executor_;
  net::master_server& server_;
  replicated_master_options options_;
  etcd::client etcd_;
  etcd::client watcher_;  // its own client: cancel_watches() ends only the leader watch
  leadership leadership_;
  std::shared_ptr<net::follower_link> link_;
  meta::replica_state copy_;
  std::shared_ptr<net::replication_hub> hub_;
  asio::steady_timer tick_;
  std::int64_t lease_id_ = 0;
  std::uint64_t promoted_objects_ = 0;
  bool stopped_ = false;
};

}  // namespace corokv::ha
