#pragma once
// Where a replicated cluster's masters meet: etcd endpoints and a cluster
// name, written as a URL (`etcd://HOST:PORT[,HOST:PORT...]/NAME`) by
// clients and nodes, or as `--etcd URL[,URL...] --cluster NAME` by masters.
// The cluster's keys in etcd live under /corokv/NAME/.

#include <corokv/etcd/client.hpp>

#include <cctype>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace corokv::ha {

struct cluster_address {
  std::vector<etcd::endpoint> endpoints;
  std::string cluster;

  // The key the leader holds: its value is the leader's metadata address
  // (HOST:PORT), its create revision the leader's term.
  std::string leader_key() const { return "/corokv/" + cluster + "/leader"; }
};

// "HOST:PORT" or "http://HOST:PORT" (etcd's own spelling); nullopt if not.
inline std::optional<etcd::endpoint> parse_etcd_endpoint(std::string_view text) {
  if (text.rfind("http://", 0) == 0) text.remove_prefix(7);
  while (!text.empty() && text.back() == '/') text.remove_suffix(1);
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  unsigned port = 0;
  const auto digits = text.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc{} || end != digits.data() + digits.size() || port == 0 || port > 65535) return std::nullopt;
  std::string host(text.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return etcd::endpoint{host, static_cast<std::uint16_t>(port)};
}

// A comma-separated list of endpoints; nullopt if any is malformed or none is given.
inline std::optional<std::vector<etcd::endpoint>> parse_etcd_endpoints(std::string_view text) {
  std::vector<etcd::endpoint> out;
  for (;;) {
    const auto comma = text.find(',');
    auto ep = parse_etcd_endpoint(text.substr(0, comma));  // an empty piece fails here
    if (!ep) return std::nullopt;
    out.push_back(std::move(*ep));
    if (comma == std::string_view::npos) return out;
    text.remove_prefix(comma + 1);
  }
}

inline bool valid_cluster_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

// "etcd://HOST:PORT[,HOST:PORT...]/NAME"; nullopt if not of that form.
inline std::optional<cluster_address> parse_cluster_url(std::string_view url) {
  constexpr std::string_view scheme = "etcd://";
  if (url.rfind(scheme, 0) != 0) return std::nullopt;
  url.remove_prefix(scheme.size());
  const auto slash = url.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto endpoints = parse_etcd_endpoints(url.substr(0, slash));
  const auto name = url.substr(slash + 1);
  if (!endpoints || !valid_cluster_name(name)) return std::nullopt;
  return cluster_address{std::move(*endpoints), std::string(name)};
}

}  // namespace corokv::ha
