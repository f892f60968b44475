#pragma once
// One master's view of who leads, without I/O: what its etcd lease is worth
// and whether it may answer.
//
// The lease is counted from when each grant or renewal was *sent*: etcd
// starts its own count later, when it handles the request, so the master's
// deadline never lies past etcd's. A leader answers only while
// now + fence_margin < that deadline; past it another master may already
// have been elected, so it stops answering before anyone else can win
// (fencing), and steps down once the deadline itself passes.

#include <corokv/types.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

namespace corokv::ha {

enum class master_state : std::uint8_t {
  candidate,  // no leader known: about to campaign
  follower,   // another master leads
  leader,
};

inline const char* to_string(master_state s) {
  switch (s) {
    case master_state::candidate: return "candidate";
    case master_state::follower: return "follower";
    case master_state::leader: return "leader";
  }
  return "unknown";
}

class leadership {
 public:
  explicit leadership(duration fence_margin) : fence_margin_(fence_margin) {}

  // A lease granted (or renewed) for `ttl`, by a request sent at `sent_at`.
  void lease_renewed(time_point sent_at, duration ttl) { lease_valid_until_ = std::max(lease_valid_until_, sent_at + ttl); }
  // The lease is gone (expired in etcd, or revoked): a new one is needed.
  void lease_lost() {
    lease_valid_until_ = time_point{};
    if (state_ == master_state::leader) step_down();
  }
  bool lease_valid(time_point now) const { return now < lease_valid_until_; }
  time_point lease_valid_until() const { return lease_valid_until_; }

  // This master created the leader key, at revision `term`.
  void won(std::uint64_t term) {
    state_ = master_state::leader;
    term_ = term;
    leader_address_.clear();
    ++terms_led_;
  }
  // Another master leads in `term` at `address`.
  void follows(std::uint64_t term, std::string address) {
    step_down();
    state_ = master_state::follower;
    term_ = std::max(term_, term);
    leader_address_ = std::move(address);
  }
  // A newer term was seen somewhere: if we led, we no longer do.
  void newer_term(std::uint64_t term) {
    if (term <= term_) return;
    step_down();
    term_ = term;
  }

  // Whether a leader may answer now (fencing).
  bool may_answer(time_point now) const {
    return state_ == master_state::leader && now + fence_margin_ < lease_valid_until_;
  }
  // A leader whose lease can no longer be trusted must stop leading.
  bool must_step_down(time_point now) const {
    return state_ == master_state::leader && now + fence_margin_ >= lease_valid_until_;
  }
  // Whatever the state was, none is known now; counted if we led.
  void step_down() {
    if (state_ == master_state::leader) ++step_downs_;
    state_ = master_state::candidate;
  }

  master_state state() const noexcept { return state_; }
  std::uint64_t term() const noexcept { return term_; }
  const std::string& leader_address() const noexcept { return leader_address_; }
  std::uint64_t terms_led() const noexcept { return terms_led_; }
  std::uint64_t step_downs() const noexcept { return step_downs_; }

 private:
  duration fence_margin_;
  master_state state_ = master_state::candidate;
  std::uint64_t term_ = 0;
  std::string leader_address_;
  time_point lease_valid_until_{};
  std::uint64_t terms_led_ = 0;
  std::uint64_t step_downs_ = 0;
};

}  // namespace corokv::ha
