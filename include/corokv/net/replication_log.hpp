#pragma once
// The leader's side of replication, without I/O: the journal as encoded
// records numbered 1, 2, ..., what each follower has acknowledged, and which
// waiting replies may go out.
//
// A reply waits until every record it may reflect is `durable`: applied by
// sync_followers followers in sync, besides the leader. A follower is in
// sync from its first ack at or beyond its snapshot's position until it
// leaves. Until sync_followers followers have been in sync at once, nothing
// is durable, not even what the leader took over (established()): a new
// leader answers nothing before its state is held by that many followers.
// A position once durable stays so (a follower that leaves had it). With
// fewer followers in sync, replies wait, and fail once they waited
// ack_timeout (replication_hub): the leader never acknowledges alone
// unless sync_followers is 0. Records every follower has been sent are dropped; a follower whose
// backlog passes max_backlog_bytes is cut off and must start again from a
// snapshot, so a stalled follower cannot grow the leader without bound.

#include <corokv/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <span>
#include <vector>

namespace corokv::net {

struct replication_log_options {
  std::size_t sync_followers = 1;                 // followers that must hold a change before it is acknowledged
  std::size_t max_backlog_bytes = 256u << 20;     // unsent bytes a follower may fall behind by
  std::size_t chunk_bytes = 1u << 20;             // records are kept (and sent) in chunks of about this size
};

class replication_log {
 public:
  using follower_id = std::uint64_t;

  explicit replication_log(replication_log_options options = {}) : options_(options) {}

  // ------------------------------------------------------------ the journal
  // Appends one encoded record; returns its position. Kept only while a
  // follower may still need it.
  std::uint64_t append(std::span<const std::byte> record) {
    if (followers_.empty()) return ++last_;  // kept for no one: a follower starts from a snapshot
    if (chunks_.empty() || chunks_.back().bytes.size() >= options_.chunk_bytes)
      chunks_.push_back({last_ + 1, {}, {}});
    chunk& c = chunks_.back();
    c.offsets.push_back(static_cast<std::uint32_t>(c.bytes.size()));
    c.bytes.insert(c.bytes.end(), record.begin(), record.end());
    bytes_ += record.size();
    return ++last_;
  }

  std::uint64_t last() const noexcept { return last_; }

  // Encoded records after position `after`, from one chunk, at most about
  // max_bytes and at most max_records: {first position, count, bytes}. Empty when nothing is newer
  // or when `after` has been dropped already (the follower is cut off).
  struct slice {
    std::uint64_t first = 0;
    std::size_t count = 0;
    std::span<const std::byte> bytes;
  };
  slice after(std::uint64_t after_pos, std::size_t max_bytes, std::size_t max_records = SIZE_MAX) const {
    if (after_pos >= last_ || after_pos + 1 < first_kept()) return {};
    auto it = std::upper_bound(chunks_.begin(), chunks_.end(), after_pos + 1,
                               [](std::uint64_t pos, const chunk& c) { return pos < c.first; });
    const chunk& c = *std::prev(it);
    const std::size_t from = static_cast<std::size_t>(after_pos + 1 - c.first);
    std::size_t to = from;
    const std::size_t begin = c.offsets[from];
    while (to < c.offsets.size() && to - from < max_records && (to == from || end_of(c, to) - begin <= max_bytes))
      ++to;
    return {after_pos + 1, to - from, std::span(c.bytes).subspan(begin, end_of(c, to - 1) - begin)};
  }

  // ------------------------------------------------------------ followers
  // A follower whose copy holds every record up to `position` (its snapshot's cut).
  follower_id add_follower(std::uint64_t position) {
    const follower_id id = next_id_++;
    followers_[id] = {position, 0, position, false};
    return id;
  }
  void remove_follower(follower_id id) {
    followers_.erase(id);
    trim();
  }
  // Records up to `position` went out to the follower.
  void sent(follower_id id, std::uint64_t position) {
    if (auto it = followers_.find(id); it != followers_.end()) it->second.sent = std::max(it->second.sent, position);
    trim();
  }
  // The follower applied everything up to `position`. An ack beyond what it
  // was sent is a protocol error (false), and changes nothing.
  bool acked(follower_id id, std::uint64_t position) {
    auto it = followers_.find(id);
    if (it == followers_.end()) return true;
    if (position > it->second.sent) return false;
    it->second.acked = std::max(it->second.acked, position);
    if (it->second.acked >= it->second.joined) it->second.in_sync = true;
    settle();
    return true;
  }
  // Bytes not yet sent to the follower: above max_backlog_bytes it is cut off.
  bool too_far_behind(follower_id id) const {
    auto it = followers_.find(id);
    if (it == followers_.end()) return false;
    if (it->second.sent + 1 < first_kept()) return true;
    return bytes_after(it->second.sent) > options_.max_backlog_bytes;
  }

  std::size_t followers() const noexcept { return followers_.size(); }
  std::size_t in_sync() const {
    return static_cast<std::size_t>(
        std::count_if(followers_.begin(), followers_.end(), [](auto& f) { return f.second.in_sync; }));
  }
  std::size_t required() const noexcept { return options_.sync_followers; }

  // Followers in sync that have not applied `position`: the ones a reply
  // waiting for it waits on.
  std::vector<follower_id> behind(std::uint64_t position) const {
    std::vector<follower_id> out;
    for (auto& [id, f] : followers_)
      if (f.in_sync && f.acked < position) out.push_back(id);
    return out;
  }

  // Whether sync_followers followers have held the leader's state at once:
  // until then nothing is durable, not even what the leader took over.
  bool established() const noexcept { return options_.sync_followers == 0 || established_; }

  // The highest position that sync_followers followers in sync have applied
  // (at some point: it never goes back); every position when none is
  // required; 0 before established().
  std::uint64_t durable() const noexcept { return options_.sync_followers == 0 ? last_ : durable_; }

  // Whether a reply that may reflect every record up to `position` may go out.
  bool is_durable(std::uint64_t position) const noexcept { return established() && durable() >= position; }

  // The largest distance, in records, between the journal and a follower's ack.
  std::uint64_t max_lag() const {
    std::uint64_t lag = 0;
    for (auto& [id, f] : followers_) lag = std::max(lag, last_ - std::min(last_, f.acked));
    return lag;
  }

  std::size_t kept_bytes() const noexcept { return bytes_; }

 private:
  struct chunk {
    std::uint64_t first;                 // position of its first record
    std::vector<std::uint32_t> offsets;  // of each record in bytes
    std::vector<std::byte> bytes;
  };
  struct follower {
    std::uint64_t sent = 0;
    std::uint64_t acked = 0;
    std::uint64_t joined = 0;  // its snapshot's position
    bool in_sync = false;
  };

  static std::size_t end_of(const chunk& c, std::size_t i) {
    return i + 1 < c.offsets.size() ? c.offsets[i + 1] : c.bytes.size();
  }
  std::uint64_t first_kept() const noexcept { return chunks_.empty() ? last_ + 1 : chunks_.front().first; }

  // An ack moved: the s-th highest ack among followers in sync, if s are.
  void settle() {
    const std::size_t need = options_.sync_followers;
    if (need == 0) return;
    std::vector<std::uint64_t> acks;
    acks.reserve(followers_.size());
    for (auto& [id, f] : followers_)
      if (f.in_sync) acks.push_back(f.acked);
    if (acks.size() < need) return;
    std::nth_element(acks.begin(), acks.begin() + static_cast<std::ptrdiff_t>(need - 1), acks.end(),
                     std::greater<>());
    established_ = true;
    durable_ = std::max(durable_, acks[need - 1]);
  }

  std::size_t bytes_after(std::uint64_t pos) const {
    std::size_t n = 0;
    for (auto it = chunks_.rbegin(); it != chunks_.rend(); ++it) {
      if (it->first + it->offsets.size() - 1 <= pos) break;
      n += it->bytes.size();
    }
    return n;
  }

  // Drops whole chunks that every follower has been sent (all of them when
  // there is no follower: a new one starts from a snapshot). The newest
  // chunk stays while it is being filled.
  void trim() {
    std::uint64_t low = last_;
    for (auto& [id, f] : followers_) low = std::min(low, f.sent);
    while (chunks_.size() > 1 && chunks_.front().first + chunks_.front().offsets.size() - 1 <= low) {
      bytes_ -= chunks_.front().bytes.size();
      chunks_.pop_front();
    }
    if (chunks_.size() == 1 && followers_.empty()) {
      bytes_ = 0;
      chunks_.clear();
    }
  }

  replication_log_options options_;
  std::deque<chunk> chunks_;
  std::uint64_t last_ = 0;
  std::size_t bytes_ = 0;
  std::map<follower_id, follower> followers_;
  follower_id next_id_ = 1;
  bool established_ = false;
  std::uint64_t durable_ = 0;
};

}  // namespace corokv::net
