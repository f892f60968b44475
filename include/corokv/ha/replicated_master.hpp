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
//   leader key. A follower publishes that it holds a copy (election.hpp)
//   before it acknowledges its snapshot, and acknowledges only while that
//   publication stands under a valid lease.
// - Elections: when the key is gone (the leader died or stepped down and
//   its lease ran out), each master publishes how far its copy goes and
//   campaigns only if no live master holds more (election.hpp); a master
//   that has no copy never leads while one that has lives. The winner
//   promotes its copy to its service (replica_state::promote, which holds
//   every object's memory for max_lease_ttl) and starts a replication hub
//   in its new term; it answers nothing until sync_followers followers hold
//   its state (replication_log). A leader that steps down keeps what it led
//   as its copy.
// - Clients see only the leader: a follower, or a fenced leader, closes any
//   connection unanswered (master_server with this object as its role).
// - Every loop that retries after a failure (etcd unreachable, the leader
//   unreachable) backs off (detail/backoff.hpp); waiting in an election is
//   polling every `retry`, not a failure.
//
// Runs on the executor given at construction (one thread: the master
// server's).

#include <corokv/detail/backoff.hpp>
#include <corokv/etcd/client.hpp>
#include <corokv/ha/election.hpp>
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
#include <list>
#include <memory>
#include <string>
#include <unistd.h>

namespace corokv::ha {

using tcp = boost::asio::ip::tcp;

struct replicated_master_options {
  cluster_address cluster;
  std::string name;       // this master, in logs and metrics; unique in the cluster
  std::string advertise;  // HOST:PORT where clients reach this master's metadata port
  std::chrono::seconds lease_ttl{2};
  duration fence_margin = std::chrono::milliseconds(500);  // stop answering this long before the lease could lapse
  duration etcd_timeout = std::chrono::milliseconds(500);  // each etcd call
  duration retry = std::chrono::milliseconds(100);         // the first wait after a failure, and the election's poll
  duration retry_max = std::chrono::seconds(2);            // the longest wait after failures in a row
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
  meta::copy_position copy;                // how far its copy goes (not while leading)
  std::uint64_t promoted_objects = 0;      // what its copy held when it last took over
  std::uint64_t elections_deferred = 0;    // times it saw no leader and let another master go first
  std::uint64_t etcd_errors = 0;           // etcd calls that failed
  std::uint64_t backoffs = 0;              // waits before retrying after a failure
  duration backoff_total{};                // their sum
  duration backoff_ceiling{};              // the longest the next such wait may be
};

class replicated_master final : public net::master_role, public std::enable_shared_from_this<replicated_master> {
 public:
  replicated_master(boost::asio::any_io_executor ex, net::master_server& server, replicated_master_options options)
      : executor_(ex),
        server_(server),
        options_(std::move(options)),
        etcd_(ex, {options_.cluster.endpoints, options_.etcd_timeout}),
        watcher_(ex, {options_.cluster.endpoints, options_.etcd_timeout}),
        leadership_(options_.fence_margin),
        link_(std::make_shared<net::follower_link>(ex)),
        tick_(ex),
        retry_({options_.retry, options_.retry_max, 0.5},
               static_cast<std::uint64_t>(::getpid()) ^ std::hash<std::string>{}(options_.name)) {}

  // Starts campaigning and following. Call on the executor.
  void start() {
    server_.set_role(this);
    server_.set_service(std::make_shared<meta::service>(options_.service));  // answers nothing until it leads
    auto self = shared_from_this();
    std::weak_ptr<replicated_master> weak = self;
    link_->on_snapshot([weak](meta::copy_position) -> boost::asio::awaitable<bool> {
      auto master = weak.lock();
      if (!master) co_return false;
      co_return co_await master->publish();
    });
    link_->may_ack([weak] {
      auto master = weak.lock();
      return master && master->may_acknowledge();
    });
    boost::asio::co_spawn(executor_, [self] { return self->run(); }, boost::asio::detached);
    boost::asio::co_spawn(executor_, [self] { return self->keep_lease(); }, boost::asio::detached);
  }

  // Stops; a leader revokes its lease so that another master can lead at
  // once. Call on the executor.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    link_->stop();
    watcher_.cancel_watches();
    tick_.cancel();
    for (auto* t : publish_queue_) t->cancel();
    if (hub_) hub_->stop();
    // The role stays: a stopped master answers nothing (may_answer()), so
    // that revoking the lease below can never let two masters answer.
    if (lease_id_ != 0)
      boost::asio::co_spawn(executor_, [self = shared_from_this(), id = lease_id_]() -> boost::asio::awaitable<void> {
        co_await self->etcd_.revoke_lease(id);
      }, boost::asio::detached);
  }

  replicated_master_stats stats() const {
    replicated_master_stats s;
    s.state = leadership_.state();
    s.term = leadership_.term();
    s.terms_led = leadership_.terms_led();
    s.step_downs = leadership_.step_downs();
    if (hub_) s.replication = hub_->stats();
    s.following = link_->stats();
    s.copy = link_->position();
    s.promoted_objects = promoted_objects_;
    s.elections_deferred = elections_deferred_;
    s.etcd_errors = etcd_errors_;
    s.backoffs = retry_.waits();
    s.backoff_total = retry_.total();
    s.backoff_ceiling = retry_.ceiling();
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
  boost::asio::awaitable<bool> replicated(std::uint64_t position) override {
    auto hub = hub_;  // kept alive across the wait, even if we step down meanwhile
    if (!hub) co_return false;
    co_return co_await hub->replicated(position);
  }
  boost::asio::awaitable<void> serve_follower(std::shared_ptr<tcp::socket> socket, std::uint64_t request_id,
                                       std::string_view name) override {
    auto hub = hub_;
    if (hub) co_await hub->serve_follower(std::move(socket), request_id, name);
  }

 private:
  void say(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  boost::asio::awaitable<void> pause(duration d) {
    boost::asio::steady_timer t(executor_, d);
    co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  // After a failure: a wait that grows while failures go on (reset by the
  // next success).
  boost::asio::awaitable<void> back_off() { co_await pause(retry_.next()); }

  std::string members_prefix() const { return "/corokv/" + options_.cluster.cluster + "/members/"; }

  // ------------------------------------------------------------ publication
  // What this master holds: its copy, or while leading the state it leads.
  member_status current_status() const {
    member_status s;
    if (leadership_.state() == master_state::leader && hub_)
      s.copy = {true, leadership_.term(), hub_->position()};
    else
      s.copy = link_->position();
    s.absent_seen = absent_seen_;
    return s;
  }

  // Puts current_status() under /corokv/NAME/members/<name>, bound to the
  // lease; whether etcd holds it now. One put at a time, each with the
  // status as it is when it starts, so the last one to land is the newest.
  boost::asio::awaitable<bool> publish() {
    while (publishing_ && !stopped_) {
      boost::asio::steady_timer turn(executor_, boost::asio::steady_timer::time_point::max());
      publish_queue_.push_back(&turn);
      auto it = std::prev(publish_queue_.end());
      co_await turn.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      publish_queue_.erase(it);
    }
    if (stopped_) co_return false;
    publishing_ = true;
    const member_status status = current_status();
    const std::int64_t lease = lease_id_;
    bool ok = lease != 0;
    if (ok && !(published_lease_ == lease && published_ == status)) {
      const std::string key = members_prefix() + options_.name;  // named: see follow()
      const std::string value = status.encode();
      auto [ec, revision] = co_await etcd_.put(key, value, lease);
      if (ec) ++etcd_errors_;
      ok = !ec && lease == lease_id_;  // under the lease we hold now, or published again under the new one
      if (ok) {
        published_ = status;
        published_lease_ = lease;
      }
    }
    publishing_ = false;
    if (!publish_queue_.empty()) publish_queue_.front()->cancel();
    co_return ok;
  }

  // A follower acknowledges only while etcd shows its copy: its last
  // publication stands under the lease it holds, and that lease is valid.
  bool may_acknowledge() const {
    return lease_id_ != 0 && published_lease_ == lease_id_ && leadership_.lease_valid(clock_type::now());
  }

  // ------------------------------------------------------------ the lease
  // Grants a lease when there is none (then publishes this master's status
  // under it), and renews it every lease_ttl / 3.
  boost::asio::awaitable<void> keep_lease() {
    const duration period = std::chrono::duration_cast<duration>(options_.lease_ttl) / 3;
    while (!stopped_) {
      const time_point sent = clock_type::now();
      if (lease_id_ == 0) {
        auto [ec, grant] = co_await etcd_.grant_lease(options_.lease_ttl);
        if (ec) {
          ++etcd_errors_;
          co_await back_off();
          continue;
        }
        if (stopped_) break;
        lease_id_ = grant.id;
        leadership_.lease_renewed(sent, std::chrono::seconds(grant.ttl));
        co_await publish();  // run() publishes again if this failed
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
          } else {
            ++etcd_errors_;  // etcd unreachable: the lease runs down; lead() steps down in time
          }
        }
      }
      co_await pause(period);
    }
  }

  // ------------------------------------------------------------ the roles
  boost::asio::awaitable<void> run() {
    const std::string key = options_.cluster.leader_key();
    while (!stopped_) {
      if (lease_id_ == 0 || !leadership_.lease_valid(clock_type::now())) {
        co_await pause(options_.retry);  // keep_lease is at it (and backs off)
        continue;
      }
      if (published_lease_ != lease_id_ && !co_await publish()) {
        co_await back_off();
        continue;
      }
      auto [ec, found] = co_await etcd_.range(key);
      if (ec) {
        ++etcd_errors_;
        co_await back_off();
        continue;
      }
      if (found.kvs.empty()) {
        // No leader. A revision at which none was seen stays this
        // election's mark until a leader is known again.
        if (absent_seen_ <= static_cast<std::int64_t>(leadership_.term())) absent_seen_ = found.revision;
        auto [elected, verdict] = co_await elect();
        if (!elected) {
          co_await back_off();
          continue;
        }
        retry_.reset();
        if (verdict != election_verdict::campaign) {
          co_await pause(options_.retry);
          continue;
        }
        if (stopped_) break;
        const std::string address = options_.advertise;  // named: see follow()
        auto [cec, created] = co_await etcd_.create_if_absent(key, address, lease_id_);
        if (cec || stopped_) {
          if (cec) ++etcd_errors_;
          co_await back_off();
          continue;
        }
        if (created.created) {
          co_await lead(static_cast<std::uint64_t>(created.revision));
          continue;
        }
        found.kvs.push_back(*created.existing);
        found.revision = created.revision;
      }
      retry_.reset();
      const etcd::key_value leader = found.kvs.front();
      if (leader.lease == lease_id_ || (abandoned_lease_ != 0 && leader.lease == abandoned_lease_)) {
        // Our own key from a lead we gave up (fenced, a newer term seen, or
        // etcd unreachable when we stepped down): revoking its lease
        // deletes it and lets the election run again.
        say("removing our stale leader key");
        const std::int64_t old = leader.lease;
        if (old == lease_id_) lease_id_ = 0;
        const std::error_code rec = co_await etcd_.revoke_lease(old);
        if (!rec || rec == make_error_code(errc::not_found)) {
          if (old == abandoned_lease_) abandoned_lease_ = 0;
        } else {
          ++etcd_errors_;
          co_await back_off();
        }
        continue;
      }
      co_await follow(leader, found.revision);
    }
  }

  // Publishes this master's position and decides from everyone's
  // (election.hpp); false when etcd could not be asked.
  boost::asio::awaitable<std::pair<bool, election_verdict>> elect() {
    using outcome = std::pair<bool, election_verdict>;
    if (!co_await publish()) co_return outcome{false, election_verdict::wait};
    const std::string prefix = members_prefix();
    auto [re, all] = co_await etcd_.range_prefix(prefix);
    if (re) {
      ++etcd_errors_;
      co_return outcome{false, election_verdict::wait};
    }
    std::vector<election_peer> peers;
    for (const auto& kv : all.kvs) {
      auto status = member_status::parse(kv.value);
      if (!status) {
        say(fmt::format("ignoring {}: not a member status ('{}')", kv.key, kv.value));
        continue;
      }
      peers.push_back({std::string_view(kv.key).substr(prefix.size()), *status});
    }
    const meta::copy_position mine = link_->position();
    const election_verdict verdict = decide_election(options_.name, mine, leadership_.term(), peers);
    if (verdict != election_verdict::campaign) ++elections_deferred_;
    if (verdict != last_verdict_ || mine != last_position_) {
      std::string seen;
      for (const auto& p : peers)
        if (p.name != options_.name) seen += fmt::format(" {}={}", p.name, p.status.encode());
      say(fmt::format("no leader; our copy {}; {}:{}", member_status{mine, 0}.encode(), to_string(verdict),
                      seen.empty() ? std::string(" no other master") : seen));
      last_verdict_ = verdict;
      last_position_ = mine;
    }
    co_return outcome{true, verdict};
  }

  // Follows `leader` until its key changes or the link ends.
  boost::asio::awaitable<void> follow(const etcd::key_value& leader, std::int64_t revision) {
    const auto term = static_cast<std::uint64_t>(leader.create_revision);
    if (leadership_.state() != master_state::follower || leadership_.term() != term)
      say(fmt::format("following {} in term {}", leader.value, term));
    leadership_.follows(term, leader.value);
    absent_seen_ = 0;                            // a leader is known: the election is over
    last_verdict_ = election_verdict::campaign;  // the next one is logged afresh
    boost::system::error_code rec;
    std::vector<tcp::endpoint> where;
    if (auto at = parse_etcd_endpoint(leader.value))  // the same HOST:PORT form
      where = net::resolve_now(at->host, at->port, rec);
    if (rec || where.empty()) {
      co_await back_off();
      co_return;
    }
    // The watch ends the link, or the wait after a failed one, as soon as
    // the leader key changes.
    auto changed = std::make_shared<bool>(false);
    auto link = link_;
    auto wake = std::make_shared<boost::asio::steady_timer>(executor_);
    std::function<void(const etcd::watch_message&)> on_message = [link, changed, wake,
                                                                  term](const etcd::watch_message& m) {
      for (auto& e : m.events)
        if (e.type == etcd::watch_event::del || e.kv.create_revision != static_cast<std::int64_t>(term)) {
          *changed = true;
          link->stop();
          wake->cancel();
        }
      if (m.canceled) link->stop();
    };
    boost::asio::co_spawn(
        executor_,
        [self = shared_from_this(), on_message = std::move(on_message), revision]() -> boost::asio::awaitable<void> {
          // Named, not temporaries inside the co_await: GCC 12 destroys those twice.
          const std::string key = self->options_.cluster.leader_key();
          auto callback = on_message;
          co_await self->watcher_.watch(key, revision + 1, std::move(callback));
        },
        boost::asio::detached);
    const std::uint64_t snapshots_before = link_->stats().snapshots;
    if (!*changed)  // not changed already: the link takes its socket before its first wait
      co_await link_->follow(where.front(), options_.name, copy_, term, options_.connect_timeout);
    if (!*changed && !stopped_) {
      // The leader is unreachable, or refused us: ask etcd again after a
      // wait, which grows unless the link got as far as a snapshot, and
      // which the leader key's change ends at once.
      if (link_->stats().snapshots != snapshots_before) retry_.reset();
      wake->expires_after(retry_.next());
      co_await wake->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    watcher_.cancel_watches();
  }

  // Leads in `term` until the lease can no longer be trusted or a newer
  // term is seen.
  boost::asio::awaitable<void> lead(std::uint64_t term) {
    leadership_.won(term);
    absent_seen_ = 0;
    const meta::copy_position took = link_->position();
    meta::promote_report report;
    std::shared_ptr<meta::service> service;
    if (took.whole)
      service = copy_.promote(options_.service, meta::steady_clock_source(), &report);
    else
      service = std::make_shared<meta::service>(options_.service);  // no master had a copy: nodes remount
    promoted_objects_ = report.objects;
    copy_.clear();
    link_->set_position({});
    auto hub = std::make_shared<net::replication_hub>(executor_, service, options_.replication);
    hub->set_term(term);
    service->set_journal(hub.get());
    hub_ = hub;
    server_.set_service(service);
    say(fmt::format("leading in term {} with the copy {} ({} objects, {} segments and {} nodes taken over{}); "
                    "answering once {} follower(s) hold it",
                    term, member_status{took, 0}.encode(), report.objects, report.segments, report.nodes,
                    report.refused ? fmt::format(", {} entries refused", report.refused) : std::string(),
                    options_.replication.log.sync_followers));
    while (!stopped_ && leadership_.state() == master_state::leader) {
      if (leadership_.must_step_down(clock_type::now())) {
        say(fmt::format("lease not renewed in time: fenced, stepping down from term {}", term));
        leadership_.step_down();
        break;
      }
      tick_.expires_after(std::chrono::milliseconds(20));
      co_await tick_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    hub->stop();
    server_.drop_connections();
    server_.set_service(std::make_shared<meta::service>(options_.service));
    hub_.reset();
    service->set_journal(nullptr);
    keep_as_copy(*service, term, hub->position());
    if (!stopped_ && lease_id_ != 0) {
      // Our key goes with our lease: the next election need not wait for it
      // to run out. If etcd cannot be told now, run() revokes it once it
      // sees the key again (or it runs out by itself).
      const std::int64_t old = lease_id_;
      lease_id_ = 0;
      const std::error_code rec = co_await etcd_.revoke_lease(old);
      if (rec && rec != make_error_code(errc::not_found)) {
        ++etcd_errors_;
        abandoned_lease_ = old;
      }
    }
  }

  // What a leader led becomes its copy when it steps down: every change it
  // made, acknowledged or not, up to `position` of its own term's journal.
  // Nothing else changes the service any more (it no longer serves, and has
  // no journal), so the snapshot is exactly that position.
  void keep_as_copy(const meta::service& service, std::uint64_t term, std::uint64_t position) {
    {
      std::lock_guard lock(link_->copy_mutex());
      copy_.clear();
      service.snapshot([&](const meta::journal_record& r) { copy_.apply(r); }, [] {});
    }
    link_->set_position({true, term, position});
  }

  boost::asio::any_io_executor executor_;
  net::master_server& server_;
  replicated_master_options options_;
  etcd::client etcd_;
  etcd::client watcher_;  // its own client: cancel_watches() ends only the leader watch
  leadership leadership_;
  std::shared_ptr<net::follower_link> link_;
  meta::replica_state copy_;
  std::shared_ptr<net::replication_hub> hub_;
  boost::asio::steady_timer tick_;
  corokv::detail::backoff retry_;
  std::int64_t lease_id_ = 0;
  std::int64_t abandoned_lease_ = 0;  // a lease we led under and could not revoke
  // Publication (election.hpp).
  std::int64_t absent_seen_ = 0;  // the revision at which no leader was seen, during an election
  member_status published_;
  std::int64_t published_lease_ = 0;
  bool publishing_ = false;
  std::list<boost::asio::steady_timer*> publish_queue_;  // publish() calls waiting for their turn
  election_verdict last_verdict_ = election_verdict::campaign;
  meta::copy_position last_position_;
  std::uint64_t promoted_objects_ = 0;
  std::uint64_t elections_deferred_ = 0;
  std::uint64_t etcd_errors_ = 0;
  bool stopped_ = false;
};

}  // namespace corokv::ha
