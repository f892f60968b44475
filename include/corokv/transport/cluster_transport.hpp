#pragma once
// The transport of a store in a cluster. Per replica it picks the cheapest
// path that reaches it:
//   1. same process (a segment of a store in this process): memcpy;
//   2. same host (the owner's memfd, mapped here once): memcpy, no socket;
//   3. otherwise TCP to the owner's data server, one request per node per
//      batch, all nodes in parallel.
// Where a segment lives comes from the metadata service's segment list,
// fetched when a batch names a segment not seen before (so the first batch
// touching a new node costs one extra metadata round trip, counted in
// stats().directory_refreshes, and later ones none).
//
// It also runs this node's data server (unless options.serve is false), so
// that the segments its store contributes are reachable by everyone, and it
// makes those segments shareable memfds when shared memory is enabled.

#include <corokv/detail/identity.hpp>
#include <corokv/net/address.hpp>
#include <corokv/net/data_client.hpp>
#include <corokv/net/data_server.hpp>
#include <corokv/transport/local_segment.hpp>
#include <corokv/transport/peer_mapping.hpp>
#include <corokv/transport/segment_registry.hpp>
#include <corokv/transport/transfer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv {

struct cluster_transport_options {
  // Where this node's data server listens, and the address peers use for it.
  boost::asio::ip::tcp::endpoint data_listen{boost::asio::ip::address_v4::loopback(), 0};
  std::string advertise_host = "127.0.0.1";  // an address, or a name looked up once, at construction
  bool serve = true;              // run a data server for this node's segments
  bool shared_memory = true;      // shareable segments; map same-host peers' segments
  net::data_client_options tcp;
};

struct cluster_transport_stats {
  std::uint64_t bytes_in_process = 0;
  std::uint64_t bytes_shared_memory = 0;
  std::uint64_t bytes_tcp = 0;
  std::uint64_t tcp_requests = 0;  // one per node per batch
  std::uint64_t directory_refreshes = 0;
};

class cluster_transport {
 public:
  using segment_lister =
      std::function<boost::asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>>()>;

  cluster_transport(boost::asio::any_io_executor ex, segment_lister list_segments,
                    cluster_transport_options options = {})
      : state_(std::make_shared<state>(std::move(list_segments), std::move(options))) {
    if (state_->options.serve) {
      // Peers connect to an address: a name given here is looked up now,
      // once (address.hpp).
      // The advertised address must be of the family the server listens on
      // ("localhost" often resolves to ::1 first, the listener is IPv4).
      boost::system::error_code ec;
      const auto advertised = net::resolve_now(state_->options.advertise_host, 0, ec);
      const auto family = state_->options.data_listen.protocol();
      const auto usable = std::find_if(advertised.begin(), advertised.end(),
                                       [&](const auto& e) { return e.protocol() == family; });
      if (ec || usable == advertised.end())
        throw boost::system::system_error(ec ? ec : make_error_code(boost::asio::error::host_not_found),
                                          "corokv: advertise_host " + state_->options.advertise_host +
                                              " has no address of data_listen's family");
      state_->options.advertise_host = usable->address().to_string();
      state_->server = std::make_shared<net::data_server>(ex, state_->own, state_->options.data_listen,
                                                          state_->options.tcp.limits);
      state_->server->start();
    }
  }
  cluster_transport(cluster_transport&&) noexcept = default;
  ~cluster_transport() {
    if (state_ && state_->server) state_->server->stop();
  }

  // This node's segments (what its data server serves).
  segment_registry& registry() const noexcept { return *state_->own; }
  const std::shared_ptr<segment_registry>& shared_registry() const noexcept { return state_->own; }

  // Where this node's data server listens (port 0 if not serving).
  boost::asio::ip::tcp::endpoint data_endpoint() const {
    return state_->server ? state_->server->local_endpoint() : boost::asio::ip::tcp::endpoint{};
  }
  std::shared_ptr<net::data_server> data_server() const { return state_->server; }

  cluster_transport_stats stats() const {
    std::lock_guard lock(state_->mu);
    return state_->stats;
  }

  // Memory for a segment of this node, and how peers reach it.
  std::pair<std::shared_ptr<local_segment>, segment_endpoints> make_segment(std::uint64_t size, bool populate,
                                                                           segment_id id) {
    const auto kind = state_->options.shared_memory ? segment_memory::shareable : segment_memory::private_anonymous;
    auto memory = std::make_shared<local_segment>(size, populate, kind, id);
    segment_endpoints where;
    where.host_id = state_->host;
    where.base_address = reinterpret_cast<std::uintptr_t>(memory->data());
    where.shm_name = memory->shm_path();
    if (state_->server) {
      where.tcp_host = state_->options.advertise_host;
      where.tcp_port = state_->server->local_endpoint().port();
    }
    return {std::move(memory), std::move(where)};
  }

  // Optimistic: a segment not known yet is looked up when the batch runs,
  // and a replica that turns out unreachable fails with segment_not_found.
  bool reaches(const replica_descriptor&) const { return true; }

  boost::asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    co_return co_await transfer<read_request>(requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    co_return co_await transfer<write_request>(requests, status);
  }

 private:
  // What the segment list says of one segment, digested once per refresh so
  // that a batch looks up, per key, only what it needs.
  struct directory_entry {
    segment_descriptor descriptor;
    std::optional<net::data_peer> data_server;  // none if it advertises no address
    bool same_host = false;                     // and shareable: worth mapping
    bool mapping_tried = false;
  };

  struct state {
    state(segment_lister l, cluster_transport_options o)
        : options(std::move(o)), list(std::move(l)), tcp(options.tcp), host(detail::host_id()) {}
    cluster_transport_options options;
    segment_lister list;
    net::data_client tcp;
    std::string host;
    std::shared_ptr<segment_registry> own = std::make_shared<segment_registry>();
    segment_registry mapped;  // same-host peers' segments, owned by peer_mapping
    std::shared_ptr<net::data_server> server;
    mutable std::mutex mu;    // guards what follows
    std::unordered_map<segment_id, directory_entry> directory;
    cluster_transport_stats stats;
  };

  enum class path { unknown, in_process, shared_memory, tcp, unreachable };

  path classify(segment_id id, net::data_peer& peer) {
    state& s = *state_;
    if (s.own->contains(id)) return path::in_process;
    if (s.mapped.contains(id)) return path::shared_memory;
    std::unique_lock lock(s.mu);
    auto it = s.directory.find(id);
    if (it == s.directory.end()) return path::unknown;
    if (s.options.shared_memory && it->second.same_host && !it->second.mapping_tried) {
      // Once per segment: mapping opens and checks a file, outside the lock.
      it->second.mapping_tried = true;
      const segment_descriptor d = it->second.descriptor;
      lock.unlock();
      if (auto m = peer_mapping::open(d)) {
        s.mapped.add(id, m->data(), m->size(), m);
        return path::shared_memory;
      }
      lock.lock();
      it = s.directory.find(id);  // a refresh may have replaced the entry
      if (it == s.directory.end()) return path::unknown;
    }
    if (!it->second.data_server) return path::unreachable;
    peer = *it->second.data_server;
    return path::tcp;
  }

  // Fetches the segment list; forgets mappings of segments that are gone.
  boost::asio::awaitable<void> refresh_directory() {
    state& s = *state_;
    auto [ec, segments] = co_await s.list();
    if (ec) co_return;
    std::unordered_map<segment_id, directory_entry> fresh;
    for (auto& d : segments) {
      directory_entry e;
      // An address, as the owner advertised it (address.hpp): parsed, never
      // looked up. Anything else leaves the segment unreachable by TCP.
      boost::system::error_code bad_address;
      const auto address = boost::asio::ip::make_address(d.endpoints.tcp_host, bad_address);
      if (!bad_address && d.endpoints.tcp_port != 0) e.data_server = net::data_peer(address, d.endpoints.tcp_port);
      e.same_host = d.endpoints.host_id == s.host && !d.endpoints.shm_name.empty();
      e.descriptor = std::move(d);
      fresh.emplace(e.descriptor.id, std::move(e));
    }
    std::vector<segment_id> gone;
    {
      std::lock_guard lock(s.mu);
      for (auto& [id, old] : s.directory) {
        auto now = fresh.find(id);
        if (now == fresh.end())
          gone.push_back(id);
        else
          now->second.mapping_tried = old.mapping_tried;  // a failed mapping is not retried
      }
      s.directory = std::move(fresh);
      ++s.stats.directory_refreshes;
    }
    for (segment_id id : gone) s.mapped.remove(id);
  }

  template <class Request>
  static void copy_one(const Request& r, std::span<std::byte> bytes, errc& status) {
    if constexpr (std::is_same_v<Request, read_request>) {
      if (bytes.size() != r.replica.length || r.destination.size() < bytes.size()) {
        status = errc::segment_not_found;
        return;
      }
      std::memcpy(r.destination.data(), bytes.data(), bytes.size());
    } else {
      if (bytes.size() != r.replica.length || r.source.size() != bytes.size()) {
        status = errc::segment_not_found;
        return;
      }
      std::memcpy(bytes.data(), r.source.data(), bytes.size());
    }
    status = errc::success;
  }

  template <class Request>
  boost::asio::awaitable<std::error_code> transfer(std::span<const Request> requests, std::span<errc> status) {
    namespace asio = boost::asio;
    state& s = *state_;
    std::vector<path> paths(requests.size());
    std::vector<net::data_peer> peers(requests.size());
    bool refreshed = false;
    for (std::size_t k = 0; k < requests.size(); ++k) {
      const segment_id segment = requests[k].replica.segment;
      if (k > 0 && segment == requests[k - 1].replica.segment) {
        // Neighbours in a batch mostly share a segment: classified once.
        paths[k] = paths[k - 1];
        peers[k] = peers[k - 1];
        continue;
      }
      paths[k] = classify(segment, peers[k]);
      if (paths[k] == path::unknown && !refreshed) {
        // A segment not seen yet: at most one directory refresh per batch.
        co_await refresh_directory();
        refreshed = true;
        paths[k] = classify(segment, peers[k]);
      }
    }

    // Memory this process can address: one lock per registry for the batch.
    std::uint64_t in_process = 0, shared = 0;
    auto copy_all = [&](segment_registry& registry, path which, std::uint64_t& bytes) {
      registry.with_segments([&](auto resolve) {
        for (std::size_t k = 0; k < requests.size(); ++k) {
          if (paths[k] != which) continue;
          copy_one(requests[k], resolve(requests[k].replica), status[k]);
          if (status[k] == errc::success) bytes += requests[k].replica.length;
        }
      });
    };
    copy_all(*s.own, path::in_process, in_process);
    copy_all(s.mapped, path::shared_memory, shared);

    // Everything else: one request per node, all nodes at once.
    std::map<net::data_peer, std::vector<std::size_t>> by_peer;
    for (std::size_t k = 0; k < requests.size(); ++k) {
      if (paths[k] == path::tcp) by_peer[peers[k]].push_back(k);
      if (paths[k] == path::unknown || paths[k] == path::unreachable) status[k] = errc::segment_not_found;
    }
    struct group {
      net::data_peer peer;
      std::vector<std::size_t> index;
      std::vector<Request> batch;
      std::vector<errc> status;
    };
    std::vector<group> groups;
    for (auto& [peer, index] : by_peer) {
      group g{peer, index, {}, std::vector<errc>(index.size(), errc::transfer_failed)};
      for (std::size_t k : index) g.batch.push_back(requests[k]);
      groups.push_back(std::move(g));
    }
    auto run = [this](group& g) -> asio::awaitable<void> {
      if constexpr (std::is_same_v<Request, read_request>)
        co_await state_->tcp.read(g.peer, g.batch, g.status);
      else
        co_await state_->tcp.write(g.peer, g.batch, g.status);
    };
    if (groups.size() == 1) {
      co_await run(groups[0]);
    } else if (groups.size() > 1) {
      auto ex = co_await asio::this_coro::executor;
      using op = decltype(asio::co_spawn(ex, run(groups[0]), asio::deferred));
      std::vector<op> ops;
      for (auto& g : groups) ops.push_back(asio::co_spawn(ex, run(g), asio::deferred));
      auto all = asio::experimental::make_parallel_group(std::move(ops));
      co_await all.async_wait(asio::experimental::wait_for_all(), asio::deferred);
    }
    std::uint64_t tcp_bytes = 0;
    for (auto& g : groups)
      for (std::size_t j = 0; j < g.index.size(); ++j) {
        status[g.index[j]] = g.status[j];
        if (g.status[j] == errc::success) tcp_bytes += requests[g.index[j]].replica.length;
      }
    {
      std::lock_guard lock(s.mu);
      s.stats.bytes_in_process += in_process;
      s.stats.bytes_shared_memory += shared;
      s.stats.bytes_tcp += tcp_bytes;
      s.stats.tcp_requests += groups.size();
    }
    co_return std::error_code{};
  }

  std::shared_ptr<state> state_;
};

}  // namespace corokv
