#pragma once
// What a master_server asks of the part that makes it one of several
// replicated masters (ha/replicated_master.hpp). A lone master has none and
// answers every request in term 0, as before.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <memory>
#include <string_view>

namespace corokv::net {

class master_role {
 public:
  virtual ~master_role() = default;

  // The leadership term every reply carries.
  virtual std::uint64_t term() const = 0;
  // False while this master must not answer: it is not the leader, or it is
  // a leader that could not renew its etcd lease in time (fenced). A request
  // that arrives then closes its connection unanswered; clients go and find
  // the leader.
  virtual bool may_answer() const = 0;
  // A request carried a newer term than ours: another master leads.
  virtual void newer_term_seen(std::uint64_t term) = 0;

  // The journal's position (replication_log::last()).
  virtual std::uint64_t position() const = 0;
  // Completes once `position` is applied by the followers a reply waits for
  // (true), or when that did not happen in time (false: the reply must not
  // go out, since what it reflects is not acknowledged).
  virtual boost::asio::awaitable<bool> replicated(std::uint64_t position) = 0;
  // Streams state and journal to a follower that sent `follow` on `socket`,
  // until that connection ends.
  virtual boost::asio::awaitable<void> serve_follower(std::shared_ptr<boost::asio::ip::tcp::socket> socket,
                                                      std::uint64_t request_id, std::string_view name) = 0;
};

}  // namespace corokv::net
