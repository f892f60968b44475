#pragma once
// Host names become addresses once, up front. Asio's asynchronous resolver
// runs getaddrinfo on a thread of its own, and corokv starts no thread; so
// the library connects to addresses only. A numeric address is parsed, with
// no lookup at all; a name is looked up synchronously, on the calling
// thread, where it is configured (the remote metadata endpoint's master,
// a node's advertised data address), never on a connection path.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace corokv::net {

using tcp = boost::asio::ip::tcp;

// The endpoints of `host` (an IPv4 or IPv6 address, or a name) at `port`;
// empty, with `ec` set, if the name does not resolve.
inline std::vector<tcp::endpoint> resolve_now(const std::string& host, std::uint16_t port,
                                              boost::system::error_code& ec) {
  ec.clear();
  const auto address = boost::asio::ip::make_address(host, ec);
  if (!ec) return {tcp::endpoint(address, port)};
  boost::asio::io_context scratch;  // a synchronous resolve runs on this thread
  tcp::resolver resolver(scratch);
  const auto results = resolver.resolve(host, std::to_string(port), ec);
  std::vector<tcp::endpoint> out;
  if (!ec)
    for (const auto& r : results) out.push_back(r.endpoint());
  return out;
}

}  // namespace corokv::net
