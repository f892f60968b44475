#pragma once
// The calls of a metadata connection, without I/O: which requests are
// waiting to go out, which were sent and await their reply, and what becomes
// of each when a reply comes, the connection breaks or time runs out. The
// session (remote_metadata.hpp) owns the socket and the timers and tells the
// table what happened; the table says whose handler completes and how.
//
// - Pipelining: any number of calls are out at once; each gets a request id
//   (written into its frame through the wire layer) and its reply is matched
//   by that id, in any order.
// - Control calls (a rejoin's register and remounts) go out as soon as a
//   connection exists; the others once it is ready (the rejoin is done).
// - A reply whose id is unknown answers a call that timed out: dropped. A
//   reply of another type than its call's means the stream is broken.
// - A broken connection fails the calls sent on it (whether the master
//   acted is unknown, so none is re-sent); calls not yet sent stay queued
//   for the next connection.
// - A call whose deadline passed fails, sent or not.
//
// `Handler` is whatever completes a caller (the session's reply_sink); the
// table only moves it. Not thread-safe: the session uses it on its strand.
// Tested without sockets (tests/net/call_table_test).

#include <corokv/types.hpp>
#include <corokv/wire/frame.hpp>

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv::net {

template <class Handler>
class call_table {
 public:
  enum class reply_kind {
    answered,    // `handler` completes with the reply
    stale,       // no such call (it timed out): drop the reply
    mismatched,  // the reply answers another question: close the connection
  };
  struct reply_match {
    reply_kind kind;
    std::optional<Handler> handler;
  };

  // Queues a call whose frame was encoded with any request id; returns the
  // id it now carries.
  std::uint64_t add(wire::message_type type, std::vector<std::byte> frame, Handler handler, time_point deadline,
                    bool control) {
    const std::uint64_t id = ++next_id_;
    wire::stamp_request_id(frame, id);
    calls_.emplace(id, entry{type, std::move(frame), std::move(handler), deadline, false});
    (control ? control_queue_ : queue_).push_back(id);
    return id;
  }

  // Appends the frames that may go out now to `out` (control calls always,
  // the others once `ready`), whole frames, until `out` holds max_bytes or
  // more; marks them sent. Returns how many were taken.
  std::size_t take_sendable(bool ready, std::vector<std::byte>& out, std::size_t max_bytes = std::size_t{1} << 20) {
    std::size_t taken = 0;
    auto take = [&](std::deque<std::uint64_t>& q) {
      while (!q.empty() && out.size() < max_bytes) {
        auto it = calls_.find(q.front());
        q.pop_front();
        if (it == calls_.end()) continue;  // timed out while queued
        out.insert(out.end(), it->second.frame.begin(), it->second.frame.end());
        it->second.frame = {};
        it->second.sent = true;
        ++taken;
      }
    };
    take(control_queue_);
    if (ready) take(queue_);
    return taken;
  }

  // Whether anything waits to be written (given readiness).
  bool has_sendable(bool ready) const noexcept { return !control_queue_.empty() || (ready && !queue_.empty()); }

  // A reply frame's header arrived.
  reply_match on_reply(const wire::frame_header& h) {
    auto it = calls_.find(h.request_id);
    if (it == calls_.end()) return {reply_kind::stale, std::nullopt};
    if (!it->second.sent || it->second.type != h.type) return {reply_kind::mismatched, std::nullopt};
    reply_match m{reply_kind::answered, std::move(it->second.handler)};
    calls_.erase(it);
    return m;
  }

  // The connection broke: f(handler) for every call sent on it, which is
  // removed. Returns how many.
  template <class F>
  std::size_t fail_sent(F&& f) {
    return fail_if([](const auto& e) { return e.sent; }, f);
  }

  // f(handler) for every call whose deadline is at or before `now`, sent or
  // not, which is removed. Returns how many.
  template <class F>
  std::size_t expire(time_point now, F&& f) {
    return fail_if([&](const auto& e) { return e.deadline <= now; }, f);
  }

  // f(handler) for every call. Returns how many.
  template <class F>
  std::size_t fail_all(F&& f) {
    const std::size_t n = fail_if([](const auto&) { return true; }, f);
    control_queue_.clear();
    queue_.clear();
    return n;
  }

  // Destroys every handler without invoking it (the execution context is
  // shutting down). Destroying a handler may run arbitrary code, so they
  // are destroyed after the table is emptied.
  void abandon_all() {
    std::unordered_map<std::uint64_t, entry> parked;
    parked.swap(calls_);
    control_queue_.clear();
    queue_.clear();
  }

  std::size_t size() const noexcept { return calls_.size(); }
  bool empty() const noexcept { return calls_.empty(); }
  // Whether call `id` is still in the table, and whether it was sent.
  std::optional<bool> sent(std::uint64_t id) const {
    auto it = calls_.find(id);
    if (it == calls_.end()) return std::nullopt;
    return it->second.sent;
  }

 private:
  struct entry {
    wire::message_type type;
    std::vector<std::byte> frame;  // empty once written
    Handler handler;
    time_point deadline;
    bool sent = false;
  };

  // The handlers are taken out first and called after: a handler may add
  // calls to the table.
  template <class Pred, class F>
  std::size_t fail_if(Pred pred, F& f) {
    std::vector<Handler> failed;
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (!pred(it->second)) {
        ++it;
        continue;
      }
      failed.push_back(std::move(it->second.handler));
      it = calls_.erase(it);
    }
    for (auto& h : failed) f(std::move(h));
    return failed.size();
  }

  std::uint64_t next_id_ = 0;
  std::unordered_map<std::uint64_t, entry> calls_;
  std::deque<std::uint64_t> control_queue_, queue_;
};

}  // namespace corokv::net
