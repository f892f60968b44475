#pragma once
// How a client finds the master to talk to when several replicated masters
// take turns leading (ha/leader_locator.hpp finds them through etcd). A
// client with a fixed master address has none.

#include <corokv/error.hpp>
#include <corokv/types.hpp>

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <string>
#include <utility>

namespace corokv::net {

struct located_master {
  std::string host;
  std::uint16_t port = 0;
  std::uint64_t term = 0;  // the leadership term it leads in
};

class master_locator {
 public:
  virtual ~master_locator() = default;
  // The master leading now; not_found while none does.
  virtual boost::asio::awaitable<std::pair<errc, located_master>> locate() = 0;
  // Completes once a master leads in a term above `term` (success), or after
  // `within` without one (timeout), or on failure.
  virtual boost::asio::awaitable<std::pair<errc, located_master>> next_leader(std::uint64_t term,
                                                                              duration within) = 0;
  // Ends a next_leader() in progress (cancelled) and every later one: the
  // client is shutting down.
  virtual void cancel() = 0;
};

}  // namespace corokv::net
