#pragma once
// A leading master's replication: the service's journal (meta::journal),
// kept in a replication_log, streamed to every follower that connects (a
// snapshot first, then each record in order), and the wait that holds a
// mutating reply until the followers it needs have applied it.
//
// No reply goes out before every record it may reflect is held by
// sync_followers followers (replication_log::is_durable), the state the
// leader took over included. A reply that has waited ack_timeout cuts off
// the followers in sync it waits on (they start again from a snapshot when
// they reconnect) and is not sent: its connection closes unanswered, as a
// lost connection's would (the caller cannot tell whether the change was
// made, and it is not acknowledged). So an acknowledged change is held by
// the leader and sync_followers followers; a lone leader acknowledges
// nothing unless sync_followers is 0.
//
// The hub is also the master_role of a master_server: term and fencing come
// from outside (ha/replicated_master.hpp sets them from the etcd election;
// tests set them by hand).
//
// Everything but record() runs on the executor given at construction (one
// thread); record() may come from any thread that calls the service.

#include <corokv/meta/service.hpp>
#include <corokv/net/frame_io.hpp>
#include <corokv/net/master_role.hpp>
#include <corokv/net/replication_log.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace corokv::net {

struct replication_hub_options {
  replication_log_options log;
  duration ack_timeout = std::chrono::seconds(1);  // the longest a reply waits for followers
  std::size_t snapshot_batch = 4096;                // records per snapshot frame
  wire::limits limits;
};

struct replication_hub_stats {
  std::uint64_t followers = 0;       // connected
  std::uint64_t in_sync = 0;         // counted for acknowledgements
  std::uint64_t position = 0;        // records journaled in this term
  std::uint64_t durable = 0;         // applied by the followers replies wait for
  std::uint64_t max_lag = 0;         // records between the journal and the slowest follower's ack
  std::uint64_t snapshots_sent = 0;
  std::uint64_t followers_cut_off = 0;  // too far behind, too slow to ack, or misbehaving
  std::uint64_t waits = 0;           // replies that waited for followers
  std::uint64_t not_replicated = 0;  // replies dropped: not held by enough followers within ack_timeout
};

class replication_hub final : public meta::journal,
                              public master_role,
                              public std::enable_shared_from_this<replication_hub> {
 public:
  replication_hub(boost::asio::any_io_executor ex, std::shared_ptr<meta::service> service,
                  replication_hub_options options = {})
      : executor_(ex), service_(std::move(service)), options_(options), log_(options.log) {}

  // ------------------------------------------------------------ set from outside
  void set_term(std::uint64_t term) noexcept { term_.store(term); }
  void set_fence(std::function<bool()> may_answer) { may_answer_ = std::move(may_answer); }
  void set_on_newer_term(std::function<void(std::uint64_t)> f) { on_newer_term_ = std::move(f); }

  // Closes every follower connection and releases waiting replies. Call on
  // the executor.
  void stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    for (auto& [id, f] : followers_) f->socket->close(ignored);
    release_waiters();
  }

  replication_hub_stats stats() const {
    std::lock_guard lock(mu_);
    replication_hub_stats s = stats_;
    s.followers = log_.followers();
    s.in_sync = log_.in_sync();
    s.position = log_.last();
    s.durable = log_.durable();
    s.max_lag = log_.max_lag();
    return s;
  }

  // ------------------------------------------------------------ meta::journal
  void record(const meta::journal_record& r) override {
    std::lock_guard lock(mu_);
    scratch_.clear();
    {
      wire::writer w(scratch_, options_.limits);
      auto copy = wire::log_record::of(r);
      wire::record_fields(w, copy);
    }
    log_.append(scratch_);
    if (!log_.followers() || wake_posted_) return;
    wake_posted_ = true;
    boost::asio::post(executor_, [self = weak_from_this()] {
      if (auto hub = self.lock()) hub->wake_writers();
    });
  }

  // ------------------------------------------------------------ master_role
  std::uint64_t term() const override { return term_.load(); }
  bool may_answer() const override { return !may_answer_ || may_answer_(); }
  void newer_term_seen(std::uint64_t term) override {
    if (on_newer_term_) on_newer_term_(term);
  }
  std::uint64_t position() const override {
    std::lock_guard lock(mu_);
    return log_.last();
  }

  boost::asio::awaitable<bool> replicated(std::uint64_t position) override {
    {
      std::lock_guard lock(mu_);
      if (log_.is_durable(position)) co_return true;
      ++stats_.waits;
    }
    auto timer = std::make_shared<boost::asio::steady_timer>(executor_, options_.ack_timeout);
    auto it = waiters_.emplace(position, timer);
    co_await timer->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    waiters_.erase(it);
    std::vector<replication_log::follower_id> slow;
    {
      std::lock_guard lock(mu_);
      if (log_.is_durable(position)) co_return true;
      if (stopped_) co_return false;
      slow = log_.behind(position);
      ++stats_.not_replicated;
    }
    // Waited ack_timeout: the followers still behind are cut off.
    for (auto id : slow) cut_off(id);
    co_return false;
  }

  boost::asio::awaitable<void> serve_follower(std::shared_ptr<tcp::socket> socket, std::uint64_t request_id,
                                       std::string_view) override {
    // The snapshot, encoded under the service's locks; the follower joins
    // the log at the snapshot's cut.
    std::vector<std::vector<std::byte>> frames;
    replication_log::follower_id id = 0;
    std::uint64_t cut = 0;
    bool encoded = true;
    {
      wire::replication_batch batch;
      batch.phase = wire::replication_phase::snapshot_start;
      std::size_t batch_bytes = 0;
      auto flush = [&] {
        frames.emplace_back();
        if (append_frame(wire::message_type::follow, true, request_id, batch, frames.back(), options_.limits) !=
            errc::success)
          encoded = false;  // cannot happen within the bounds below; the follower is refused if it does
        stamp_term(frames.back());
        batch.records.clear();
        batch_bytes = 0;
        batch.phase = wire::replication_phase::snapshot_part;
      };
      // A frame holds at most snapshot_batch records and stays far below
      // max_payload (keys are at most 64 KiB; a record's other fields ~200 B).
      const std::size_t max_batch_bytes = std::min<std::size_t>(options_.limits.max_payload / 2, 8u << 20);
      service_->snapshot(
          [&](const meta::journal_record& r) {
            batch.records.push_back(wire::log_record::of(r));
            batch_bytes += r.key.size() + 256;
            if (batch.records.size() >= std::min<std::size_t>(options_.snapshot_batch, options_.limits.max_batch) ||
                batch_bytes >= max_batch_bytes)
              flush();
          },
          [&] {
            std::lock_guard lock(mu_);
            cut = log_.last();
            id = log_.add_follower(cut);
          });
      flush();
      batch.phase = wire::replication_phase::snapshot_end;
      batch.seq = cut;
      flush();
    }
    auto link = std::make_shared<follower>(socket, executor_);
    followers_[id] = link;
    if (!encoded) {
      cut_off(id);
      co_return;
    }
    {
      std::lock_guard lock(mu_);
      ++stats_.snapshots_sent;
    }
    boost::asio::co_spawn(executor_, [self = shared_from_this(), link, id] { return self->read_acks(link, id); },
                   boost::asio::detached);

    bool ok = true;
    for (auto& f : frames) {
      auto [ec, n] = co_await boost::asio::async_write(*socket, boost::asio::buffer(f), transfer_all_at_once{},
                                                boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) {
        ok = false;
        break;
      }
    }
    frames.clear();
    std::uint64_t sent = cut;
    std::vector<std::byte> frame;
    bool too_far_behind = false;
    while (ok && !stopped_ && socket->is_open()) {
      {
        std::lock_guard lock(mu_);
        if (log_.too_far_behind(id)) {
          too_far_behind = true;
          break;
        }
        const auto slice = log_.after(sent, options_.log.chunk_bytes, options_.limits.max_batch);
        if (slice.count != 0) {
          build_log_frame(request_id, slice, frame);
          sent = slice.first + slice.count - 1;
        }
      }
      if (frame.empty()) {
        link->wake.expires_at(boost::asio::steady_timer::time_point::max());
        co_await link->wake.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        continue;
      }
      auto [ec, n] = co_await boost::asio::async_write(*socket, boost::asio::buffer(frame), transfer_all_at_once{},
                                                boost::asio::as_tuple(boost::asio::use_awaitable));
      frame.clear();
      if (ec) break;
      std::lock_guard lock(mu_);
      log_.sent(id, sent);
    }
    drop(id, too_far_behind);  // nothing left to do if it was cut off already
  }

 private:
  struct follower {
    follower(std::shared_ptr<tcp::socket> s, boost::asio::any_io_executor ex) : socket(std::move(s)), wake(ex) {}
    std::shared_ptr<tcp::socket> socket;
    boost::asio::steady_timer wake;
  };

  void stamp_term(std::vector<std::byte>& frame) const { wire::stamp_term(frame, term_.load()); }

  // A log frame: the replication_batch's fields, with the records copied as
  // they were encoded when journaled.
  void build_log_frame(std::uint64_t request_id, const replication_log::slice& slice, std::vector<std::byte>& out) {
    wire::replication_batch head;
    head.phase = wire::replication_phase::log;
    head.seq = slice.first;
    out.clear();
    append_frame(wire::message_type::follow, true, request_id, head, out, options_.limits);
    // The empty list's count is the last 4 bytes: overwrite it, then append.
    const auto count = static_cast<std::uint32_t>(slice.count);
    for (std::size_t i = 0; i < 4; ++i) out[out.size() - 4 + i] = static_cast<std::byte>(count >> (8 * i));
    out.insert(out.end(), slice.bytes.begin(), slice.bytes.end());
    const auto payload = static_cast<std::uint32_t>(out.size() - wire::header_size);
    for (std::size_t i = 0; i < 4; ++i) out[12 + i] = static_cast<std::byte>(payload >> (8 * i));
    stamp_term(out);
  }

  boost::asio::awaitable<void> read_acks(std::shared_ptr<follower> link, replication_log::follower_id id) {
    wire::frame_header h;
    std::vector<std::byte> payload;
    for (;;) {
      const frame_status got = co_await read_frame(*link->socket, options_.limits, false, h, payload);
      if (got != frame_status::ok) break;
      wire::replica_ack_request ack;
      if (h.type != wire::message_type::replica_ack || wire::decode(payload, ack, options_.limits) != errc::success)
        break;
      bool sane;
      {
        std::lock_guard lock(mu_);
        sane = log_.acked(id, ack.applied);
      }
      if (!sane) break;
      settle_waiters();
    }
    boost::system::error_code ignored;
    link->socket->close(ignored);
    link->wake.cancel();
  }

  void cut_off(replication_log::follower_id id) { drop(id, true); }

  // Closes a follower's connection and forgets it; the replies that waited
  // for it are settled again. `cut` counts it as cut off.
  void drop(replication_log::follower_id id, bool cut) {
    auto it = followers_.find(id);
    if (it == followers_.end()) return;
    boost::system::error_code ignored;
    it->second->socket->close(ignored);
    it->second->wake.cancel();
    {
      std::lock_guard lock(mu_);
      log_.remove_follower(id);
      if (cut) ++stats_.followers_cut_off;
    }
    followers_.erase(it);
    settle_waiters();
  }

  void wake_writers() {
    {
      std::lock_guard lock(mu_);
      wake_posted_ = false;
    }
    for (auto& [id, f] : followers_) f->wake.cancel();
  }

  // Wakes the replies whose position is now durable.
  void settle_waiters() {
    std::uint64_t durable;
    {
      std::lock_guard lock(mu_);
      if (!log_.established()) return;
      durable = log_.durable();
    }
    for (auto it = waiters_.begin(); it != waiters_.end() && it->first <= durable; ++it) it->second->cancel();
  }

  void release_waiters() {
    for (auto& [pos, timer] : waiters_) timer->cancel();
  }

  boost::asio::any_io_executor executor_;
  std::shared_ptr<meta::service> service_;
  replication_hub_options options_;
  std::atomic<std::uint64_t> term_{0};
  std::function<bool()> may_answer_;
  std::function<void(std::uint64_t)> on_newer_term_;
  bool stopped_ = false;

  mutable std::mutex mu_;  // log_, scratch_, stats_, wake_posted_
  replication_log log_;
  std::vector<std::byte> scratch_;
  replication_hub_stats stats_;
  bool wake_posted_ = false;

  // Executor state.
  std::map<replication_log::follower_id, std::shared_ptr<follower>> followers_;
  std::multimap<std::uint64_t, std::shared_ptr<boost::asio::steady_timer>> waiters_;
};

}  // namespace corokv::net
