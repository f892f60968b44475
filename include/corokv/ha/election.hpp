#pragma once
// Who may lead once no master does, without I/O.
//
// The rule: a master campaigns only while no live master holds more than
// its copy does. Every master keeps its copy's position (meta::
// copy_position: the term whose journal it copies and how far) under
// /corokv/NAME/members/<its name>, bound to its etcd lease, so a dead
// master's entry goes with its lease:
// - when it starts (no copy), and whenever it gets a new lease;
// - when it has loaded a whole snapshot from a leader, *before* it
//   acknowledges it: a follower counts towards acknowledgements only once
//   etcd shows that it holds a copy;
// - during an election, with `absent_seen`, the etcd revision at which it
//   saw no leader. Once no leader is left, nothing moves any copy, so a
//   position published then is final.
// A master that sees no leader publishes its position and reads everyone's:
// - with no copy, it campaigns only if no live master has one (a new
//   cluster, or every copy lost); otherwise it never leads;
// - with a copy, it defers to any live master whose copy is further (ties:
//   the lowest name), and waits while a live master with a copy has not yet
//   published its final position; when every live copy is known and none
//   is further, it campaigns.
// So the winner holds every acknowledged change that any live master holds
// (the argument is in docs/guide/high-availability.md, "Why nothing
// acknowledged is lost").

#include <corokv/meta/replica_state.hpp>

#include <charconv>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace corokv::ha {

using meta::copy_position;

// One master's entry under /corokv/NAME/members/.
struct member_status {
  copy_position copy;
  // The etcd revision at which it last saw no leader, if it published
  // during an election; 0 otherwise. A position published with absent_seen
  // above a term was published after that term's leader was gone.
  std::int64_t absent_seen = 0;

  friend bool operator==(const member_status&, const member_status&) = default;

  std::string encode() const {
    if (!copy.whole) return "empty " + std::to_string(absent_seen);
    return "whole " + std::to_string(copy.term) + " " + std::to_string(copy.applied) + " " +
           std::to_string(absent_seen);
  }

  static std::optional<member_status> parse(std::string_view text) {
    if (text.empty() || text.back() == ' ') return std::nullopt;  // words are separated by single spaces
    member_status s;
    auto word = [&]() -> std::string_view {
      const auto space = text.find(' ');
      const std::string_view w = text.substr(0, space);
      text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
      return w;
    };
    auto number = [&](auto& out) {
      const std::string_view w = word();
      auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), out);
      return !w.empty() && ec == std::errc{} && end == w.data() + w.size();
    };
    const std::string_view kind = word();
    if (kind == "whole") {
      s.copy.whole = true;
      if (!number(s.copy.term) || !number(s.copy.applied)) return std::nullopt;
    } else if (kind != "empty") {
      return std::nullopt;
    }
    if (!number(s.absent_seen) || s.absent_seen < 0 || !text.empty()) return std::nullopt;
    return s;
  }
};

struct election_peer {
  std::string_view name;
  member_status status;
};

enum class election_verdict : std::uint8_t {
  campaign,  // no live master holds more: try to create the leader key
  defer,     // another live master holds more (or as much, with a lower name), or has a copy while this one has none
  wait,      // a live master with a copy has not published its final position yet
};

inline const char* to_string(election_verdict v) {
  switch (v) {
    case election_verdict::campaign: return "campaign";
    case election_verdict::defer: return "defer";
    case election_verdict::wait: return "wait";
  }
  return "unknown";
}

// The decision of master `self`, whose copy is `mine`, that knows terms up
// to `newest_term` and sees no leader, given the live masters' entries
// (its own, if listed, is skipped).
inline election_verdict decide_election(std::string_view self, const copy_position& mine, std::uint64_t newest_term,
                                        std::span<const election_peer> peers) {
  bool waiting = false;
  for (const auto& p : peers) {
    if (p.name == self || !p.status.copy.whole) continue;
    if (!mine.whole) return election_verdict::defer;  // a copy lives: never lead without it
    // A published position only grows while its master lives: one already
    // further is further still.
    const auto order = p.status.copy <=> mine;
    if (order > 0 || (order == 0 && p.name < self)) return election_verdict::defer;
    const bool final = p.status.absent_seen > 0 && static_cast<std::uint64_t>(p.status.absent_seen) > newest_term;
    if (!final) waiting = true;
  }
  return waiting ? election_verdict::wait : election_verdict::campaign;
}

}  // namespace corokv::ha
