#pragma once
// How a node mounts a segment under an id it proposes. The node makes the
// memory (or the disk file) reachable under the id first and only then asks
// the service to mount it, so no allocation can land in a range the node
// cannot serve yet. The service answers already_exists when the id is
// taken: a fresh proposal is then withdrawn and another tried; a segment
// mounted again under its old id (a node restarted with its disk) waits
// instead, since the previous process holds the id until the service
// declares it dead.
//
// segment_proposal decides (no I/O); mount_proposed drives it.

#include <corokv/detail/identity.hpp>
#include <corokv/error.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <system_error>
#include <utility>

namespace corokv::client {

class segment_proposal {
 public:
  enum class step {
    mounted,          // done: the service mounted it under id()
    failed,           // give up: withdraw id() and report the answer
    propose_another,  // withdraw the previous id, make it reachable under id() and ask again
    ask_again_later,  // the same id, after a pause
  };

  // Fresh random ids (`first` the first of them), at most `proposals`.
  static segment_proposal fresh(segment_id first = detail::random_id(), int proposals = 3) {
    return segment_proposal(first, proposals, {});
  }
  // `id` again (a remount), asked until `give_up`.
  static segment_proposal again(segment_id id, time_point give_up) { return segment_proposal(id, 0, give_up); }

  segment_id id() const noexcept { return id_; }
  segment_id previous() const noexcept { return previous_; }

  // The service answered `status` to the mount of id() at `now`.
  step answered(std::error_code status, time_point now) {
    if (!status) return step::mounted;
    if (status != errc::already_exists) return step::failed;
    if (proposals_ == 0) return now < give_up_ ? step::ask_again_later : step::failed;
    if (--proposals_ == 0) return step::failed;
    previous_ = id_;
    id_ = detail::random_id();
    return step::propose_another;
  }

 private:
  segment_proposal(segment_id id, int proposals, time_point give_up)
      : id_(id), proposals_(proposals), give_up_(give_up) {}

  segment_id id_;
  segment_id previous_ = 0;
  int proposals_;  // fresh ids left; 0 for a remount
  time_point give_up_;
};

// Mounts under proposal.id(), which the caller has already made reachable.
// `mount(id)` asks the service (awaitable of {error_code, segment_id}),
// `reach(id)` makes the segment reachable under id (an error_code: stop),
// `withdraw(id)` undoes that, `pause()` awaits before asking again. On
// failure nothing is left reachable.
template <class Mount, class Reach, class Withdraw, class Pause>
boost::asio::awaitable<std::pair<std::error_code, segment_id>> mount_proposed(segment_proposal proposal, Mount mount,
                                                                             Reach reach, Withdraw withdraw,
                                                                             Pause pause) {
  for (;;) {
    std::pair<std::error_code, segment_id> answer = co_await mount(proposal.id());
    switch (proposal.answered(answer.first, clock_type::now())) {
      case segment_proposal::step::mounted:
        co_return answer;
      case segment_proposal::step::failed:
        withdraw(proposal.id());
        co_return std::pair<std::error_code, segment_id>{answer.first, 0};
      case segment_proposal::step::propose_another:
        withdraw(proposal.previous());
        if (std::error_code ec = reach(proposal.id())) co_return std::pair<std::error_code, segment_id>{ec, 0};
        break;
      case segment_proposal::step::ask_again_later:
        co_await pause();
        break;
    }
  }
}

}  // namespace corokv::client
