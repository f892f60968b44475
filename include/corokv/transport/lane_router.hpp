#pragma once
// The transport of every store: a router over an ordered set of lanes.
//
// Per batch, it first checks every request's shape (request_shape.hpp: a
// read's buffer holds the replica, a write's is exactly its length): one
// that is wrong fails (buffer_too_small, size_mismatch) and goes to no
// lane. For each other request it finds the replica's segment in the
// directory (the metadata service's segment list, if the store has one),
// asks every lane how well it reaches that segment (lane::rank; ties go to
// the lane listed first), and gives the request to the best. Each lane with
// work is then called once for its share of the batch, all of them in
// parallel, and their statuses are put back in request order. A segment no
// lane reaches and the directory does not know triggers one refresh of the
// directory per batch; a request that is still unreachable fails with
// segment_not_found, and the store tries its next replica.
//
// Adding a lane touches no other lane, this router or the store: name it in
// the list, as the tests do with a lane of their own (tests/transport).
//
// The router also owns what the lanes share: this node's segments (made of
// the memory the options ask for, published to every publishing_lane), the
// registered regions (registered with every registering_lane; the regions a
// batch uses are held until its lanes returned), counters per lane, and
// this node's data server: the first hosting_lane's, which every
// serving_lane is given to register its handlers with when the router is
// made (lane.hpp). A lane that serves therefore plugs in like any other.

#include <corokv/detail/guarded_spawn.hpp>
#include <corokv/detail/identity.hpp>
#include <corokv/detail/scratch_pool.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/local_segment.hpp>
#include <corokv/memory/registered_region.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/transport/data_transport.hpp>
#include <corokv/transport/destination_groups.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/request_shape.hpp>
#include <corokv/transport/segment_directory.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv::transport {

struct router_options {
  // What this node's segments are made of: memory private to this process,
  // or a memfd that same-host peers map (memory::segment_memory::shareable).
  memory::segment_memory memory = memory::segment_memory::private_anonymous;
  // The metadata service's segment list. Fetched when a batch names a
  // segment that no lane reaches and the directory does not know, at most
  // once per batch. Empty for a store whose lanes need no directory.
  std::function<boost::asio::awaitable<std::pair<std::error_code, std::vector<segment_descriptor>>>()> list_segments;
  // Only the lanes named here carry transfers (lane::name()); empty: all.
  // Tests and benchmarks use it to force a path (only "rdma", say).
  std::vector<std::string> lanes;
};

template <lane... Lanes>
class lane_router {
  static_assert(sizeof...(Lanes) >= 1 && sizeof...(Lanes) < 255, "a router has 1 to 254 lanes");

 public:
  static constexpr std::size_t lane_count = sizeof...(Lanes);

  lane_router()
    requires(std::default_initializable<Lanes> && ...)
      : lane_router(router_options{}, Lanes{}...) {}
  explicit lane_router(Lanes... lanes) : lane_router(router_options{}, std::move(lanes)...) {}
  // Throws std::invalid_argument if options.lanes names no lane of the router.
  explicit lane_router(router_options options, Lanes... lanes)
      : core_(std::make_unique<core>(std::move(options), std::move(lanes)...)) {
    core& c = *core_;
    c.enabled.fill(c.options.lanes.empty());
    for (const std::string& wanted : c.options.lanes) {
      bool found = false;
      for_each_lane([&]<std::size_t I>(auto& l) {
        if (l.name() == wanted) found = c.enabled[I] = true;
      });
      if (!found) throw std::invalid_argument("corokv: no lane named '" + wanted + "'");
    }
    serve_through_data_server();
  }

  lane_router(lane_router&&) noexcept = default;
  lane_router& operator=(lane_router&&) = delete;
  ~lane_router() {
    if (!core_) return;
    std::vector<segment_id> ids;
    {
      std::lock_guard lock(core_->segments_mu);
      for (auto& [id, memory] : core_->segments) ids.push_back(id);
    }
    for (segment_id id : ids) remove_segment(id);
  }

  // The lanes, by position or by type.
  template <std::size_t I>
  auto& lane() noexcept {
    return std::get<I>(core_->lanes);
  }
  template <class L>
  static constexpr bool has_lane = (std::is_same_v<L, Lanes> || ...);
  template <class L>
    requires has_lane<L>
  L& lane() noexcept {
    return std::get<L>(core_->lanes);
  }
  const segment_directory& directory() const noexcept { return core_->directory; }

  // ------------------------------------------------------------ segments
  std::pair<std::error_code, segment_endpoints> add_segment(segment_id id, std::uint64_t size, bool populate) {
    core& c = *core_;
    {
      std::lock_guard lock(c.segments_mu);
      if (c.segments.count(id)) return {errc::already_exists, {}};
    }
    auto memory = std::make_shared<memory::local_segment>(size, populate, c.options.memory, id);
    if (!memory->valid()) return {memory->error(), {}};
    segment_endpoints where = memory->endpoints();
    const published_segment segment{id, memory};
    std::size_t published = 0;
    std::error_code ec;
    for_each_lane([&]<std::size_t I>(auto& l) {
      if constexpr (publishing_lane<std::remove_reference_t<decltype(l)>>) {
        if (ec) return;
        ec = l.publish(segment, where);
        if (!ec) published = I + 1;
      }
    });
    if (ec) {
      withdraw_from_lanes(id, published);
      return {ec, {}};
    }
    std::lock_guard lock(c.segments_mu);
    c.segments.emplace(id, std::move(memory));
    return {std::error_code{}, std::move(where)};
  }

  void remove_segment(segment_id id) {
    std::shared_ptr<memory::local_segment> memory;  // unmapped when the lanes' last pins go
    {
      std::lock_guard lock(core_->segments_mu);
      auto it = core_->segments.find(id);
      if (it == core_->segments.end()) return;
      memory = std::move(it->second);
      core_->segments.erase(it);
    }
    withdraw_from_lanes(id, lane_count);
  }

  // ------------------------------------------------------------ regions
  std::error_code register_buffer(boost::asio::mutable_buffer region) {
    return core_->regions.add(region, [this](std::size_t lane_index, memory::registered_region& r,
                                            std::unique_ptr<memory::lane_registration>& out) {
      std::error_code ec;
      for_each_lane([&]<std::size_t I>(auto& l) {
        if constexpr (registering_lane<std::remove_reference_t<decltype(l)>>)
          if (I == lane_index) ec = l.register_region(r, out);
      });
      return ec;
    });
  }
  std::error_code unregister_buffer(boost::asio::mutable_buffer region) { return core_->regions.remove(region); }
  std::size_t registered_buffers() const { return core_->regions.size(); }

  // ------------------------------------------------------------ transfers
  boost::asio::awaitable<std::error_code> read(std::span<const memory::read_request> requests, std::span<errc> status) {
    return transfer<memory::read_request>(requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const memory::write_request> requests, std::span<errc> status) {
    return transfer<memory::write_request>(requests, status);
  }

  // The batch done before returning, if every request goes to one
  // synchronous_lane that needs no registration (memory this process
  // reaches); nullopt, with nothing done, otherwise.
  std::optional<std::error_code> try_read_now(std::span<const memory::read_request> requests, std::span<errc> status) {
    return transfer_now<memory::read_request>(requests, status);
  }
  std::optional<std::error_code> try_write_now(std::span<const memory::write_request> requests, std::span<errc> status) {
    return transfer_now<memory::write_request>(requests, status);
  }

  std::vector<lane_counters> counters_by_lane() const {
    std::vector<lane_counters> out;
    for_each_lane([&]<std::size_t I>(auto& l) {
      const auto& c = core_->counters[I];
      auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
      out.push_back({std::string(l.name()), get(c.batches), get(c.requests), get(c.bytes_read), get(c.bytes_written),
                     get(c.failures)});
    });
    return out;
  }

 private:
  // Gives every serving lane the first hosting lane's data server.
  void serve_through_data_server() {
    std::shared_ptr<net::data_server> server;
    for_each_lane([&]<std::size_t I>(auto& l) {
      if constexpr (hosting_lane<std::remove_reference_t<decltype(l)>>)
        if (!server) server = l.data_server();
    });
    if (!server) return;
    for_each_lane([&]<std::size_t I>(auto& l) {
      if constexpr (serving_lane<std::remove_reference_t<decltype(l)>>) l.serve(*server);
    });
  }

  static constexpr std::uint8_t no_lane = 255;

  struct counter_block {
    std::atomic<std::uint64_t> batches{0}, requests{0}, bytes_read{0}, bytes_written{0}, failures{0};
  };

  // What one batch of one request type needs while it is routed; reused
  // across batches (scratch_pool).
  template <class Request>
  struct route_scratch {
    std::vector<std::uint8_t> lane_of;  // per request
    destination_groups<std::uint8_t> by_lane;  // a group per lane with work, keyed by the lane's position
    std::array<std::vector<Request>, lane_count> requests;  // per group
    std::array<std::vector<errc>, lane_count> status;       // per group
    std::vector<memory::region_registry::region_ptr> held;  // regions this batch's lanes use
  };

  struct core {
    core(router_options o, Lanes... l) : lanes(std::move(l)...), options(std::move(o)) {}
    std::tuple<Lanes...> lanes;
    router_options options;
    std::array<bool, lane_count> enabled{};  // options.lanes, by position
    segment_directory directory;
    memory::region_registry regions{lane_count};
    std::mutex segments_mu;
    std::unordered_map<segment_id, std::shared_ptr<memory::local_segment>> segments;
    std::array<counter_block, lane_count> counters;
    detail::scratch_pool<route_scratch<memory::read_request>> read_scratch;
    detail::scratch_pool<route_scratch<memory::write_request>> write_scratch;
  };

  // f.template operator()<I>(lane) for every lane, in order.
  template <class F>
  void for_each_lane(F&& f) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f.template operator()<I>(std::get<I>(core_->lanes)), ...);
    }(std::make_index_sequence<lane_count>{});
  }

  void withdraw_from_lanes(segment_id id, std::size_t first_lanes) {
    for_each_lane([&]<std::size_t I>(auto& l) {
      if constexpr (publishing_lane<std::remove_reference_t<decltype(l)>>)
        if (I < first_lanes) l.withdraw(id);
    });
  }

  // The best lane for a segment, or no_lane.
  std::uint8_t choose(const segment_route& where) const {
    lane_rank best = ranks::unreachable;
    std::uint8_t which = no_lane;
    for_each_lane([&]<std::size_t I>(auto& l) {
      if (!core_->enabled[I]) return;
      const lane_rank r = l.rank(where);
      if (r < best) {
        best = r;
        which = static_cast<std::uint8_t>(I);
      }
    });
    return which;
  }

  // Gives every request a lane (or no_lane); true if some request's segment
  // was reached by no lane and is missing from the directory.
  template <class Request>
  bool classify(std::span<const Request> requests, std::vector<std::uint8_t>& lane_of) const {
    lane_of.resize(requests.size());
    bool unknown = false;
    auto body = [&](auto find) {
      segment_id last = 0;
      std::uint8_t last_lane = no_lane;
      for (std::size_t k = 0; k < requests.size(); ++k) {
        const segment_id id = requests[k].replica.segment;
        if (k > 0 && id == last) {  // neighbours in a batch mostly share a segment
          lane_of[k] = last_lane;
          continue;
        }
        const segment_descriptor* d = find(id);
        last = id;
        last_lane = lane_of[k] = choose({id, d});
        if (last_lane == no_lane && !d) unknown = true;
      }
    };
    if (core_->options.list_segments)
      core_->directory.with_segments(body);
    else
      body([](segment_id) -> const segment_descriptor* { return nullptr; });
    return unknown;
  }

  boost::asio::awaitable<void> refresh_directory() {
    auto [ec, segments] = co_await core_->options.list_segments();
    if (ec) co_return;
    const std::vector<segment_id> gone = core_->directory.replace(std::move(segments));
    if (gone.empty()) co_return;
    for_each_lane([&]<std::size_t>(auto& l) {
      if constexpr (directory_following_lane<std::remove_reference_t<decltype(l)>>) l.forget(gone);
    });
  }

  // The lane's read or write of `requests`, as an awaitable to start.
  template <class Request>
  boost::asio::awaitable<std::error_code> call_lane(std::size_t which, std::span<const Request> requests,
                                                    std::span<errc> status) {
    std::optional<boost::asio::awaitable<std::error_code>> op;
    for_each_lane([&]<std::size_t I>(auto& l) {
      if (I != which) return;
      if constexpr (std::is_same_v<Request, memory::read_request>)
        op.emplace(l.read(requests, status));
      else
        op.emplace(l.write(requests, status));
    });
    return std::move(*op);
  }

  template <class Request>
  static std::uint64_t bytes_of(std::span<const Request> requests, std::span<const errc> status,
                                std::uint64_t& failures) {
    std::uint64_t bytes = 0;
    for (std::size_t k = 0; k < requests.size(); ++k) {
      if (status[k] == errc::success)
        bytes += requests[k].replica.length;
      else
        ++failures;
    }
    return bytes;
  }

  template <class Request>
  void count(std::size_t which, std::span<const Request> requests, std::span<const errc> status) {
    counter_block& c = core_->counters[which];
    std::uint64_t failures = 0;
    const std::uint64_t bytes = bytes_of(requests, status, failures);
    c.batches.fetch_add(1, std::memory_order_relaxed);
    c.requests.fetch_add(requests.size(), std::memory_order_relaxed);
    (std::is_same_v<Request, memory::read_request> ? c.bytes_read : c.bytes_written).fetch_add(bytes, std::memory_order_relaxed);
    if (failures) c.failures.fetch_add(failures, std::memory_order_relaxed);
  }

  static constexpr bool registers(std::size_t which) {
    bool out = false;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((out = out || (I == which && registering_lane<std::tuple_element_t<I, std::tuple<Lanes...>>>)), ...);
    }(std::make_index_sequence<lane_count>{});
    return out;
  }
  static constexpr bool any_registers = (registering_lane<Lanes> || ...);

  template <class Request>
  static const void* buffer_of(const Request& r) {
    if constexpr (std::is_same_v<Request, memory::read_request>)
      return r.destination.data();
    else
      return r.source.data();
  }

  template <class Request>
  detail::scratch_pool<route_scratch<Request>>& scratch_for() {
    if constexpr (std::is_same_v<Request, memory::read_request>)
      return core_->read_scratch;
    else
      return core_->write_scratch;
  }

  // A router of one lane that needs no registrations, and no directory,
  // gives that lane every batch as it is: the lane answers
  // segment_not_found for what it cannot reach, which is all classifying
  // would tell.
  bool passes_through() const noexcept {
    return lane_count == 1 && !any_registers && !core_->options.list_segments && core_->enabled[0];
  }

  template <class Request>
  static std::error_code lane_now(auto& l, std::span<const Request> requests, std::span<errc> status) {
    if constexpr (std::is_same_v<Request, memory::read_request>)
      return l.read_now(requests, status);
    else
      return l.write_now(requests, status);
  }

  template <class Request>
  std::optional<std::error_code> transfer_now(std::span<const Request> requests, std::span<errc> status) {
    if (requests.empty()) return std::error_code{};
    // A request of the wrong shape goes the awaited way, which fails it alone.
    if (!std::all_of(requests.begin(), requests.end(), [](const Request& r) { return request_shape(r) == errc::success; }))
      return std::nullopt;
    if (passes_through()) {
      std::optional<std::error_code> out;
      for_each_lane([&]<std::size_t I>(auto& l) {
        if constexpr (synchronous_lane<std::remove_reference_t<decltype(l)>> &&
                      !registering_lane<std::remove_reference_t<decltype(l)>>) {
          out = lane_now<Request>(l, requests, status);
          count<Request>(I, requests, status);
        }
      });
      return out;
    }
    auto lease = scratch_for<Request>().take();
    route_scratch<Request>& s = *lease;
    if (classify(requests, s.lane_of) && core_->options.list_segments) return std::nullopt;  // refresh first
    const std::uint8_t first = s.lane_of[0];
    if (first == no_lane || !std::all_of(s.lane_of.begin(), s.lane_of.end(), [&](std::uint8_t j) { return j == first; }))
      return std::nullopt;
    std::optional<std::error_code> out;
    for_each_lane([&]<std::size_t I>(auto& l) {
      if constexpr (synchronous_lane<std::remove_reference_t<decltype(l)>> &&
                    !registering_lane<std::remove_reference_t<decltype(l)>>) {
        if (I != first) return;
        out = lane_now<Request>(l, requests, status);
        count<Request>(I, requests, status);
      }
    });
    return out;
  }

  template <class Request>
  boost::asio::awaitable<std::error_code> transfer(std::span<const Request> requests, std::span<errc> status) {
    namespace asio = boost::asio;
    if (requests.empty()) co_return std::error_code{};
    const bool well_formed = check_request_shapes(requests, status);
    if (well_formed && passes_through()) {
      const std::error_code ec = co_await call_lane<Request>(0, requests, status);
      count<Request>(0, requests, status);
      co_return ec;
    }
    auto lease = scratch_for<Request>().take();
    route_scratch<Request>& s = *lease;
    if (classify(requests, s.lane_of) && core_->options.list_segments) {
      co_await refresh_directory();
      classify(requests, s.lane_of);
    }

    // The usual batch: every request to one lane that needs no registration.
    // That lane gets the batch as it is, with no copy.
    const std::uint8_t first = s.lane_of[0];
    const bool one_lane = first != no_lane &&
                          std::all_of(s.lane_of.begin(), s.lane_of.end(), [&](std::uint8_t j) { return j == first; });
    if (well_formed && one_lane && !registers(first)) {
      const std::error_code ec = co_await call_lane<Request>(first, requests, status);
      count<Request>(first, requests, status);
      co_return ec;
    }

    // A group per lane; a request no lane reaches, or of the wrong shape
    // (its status set above), goes to none.
    for (std::size_t g = 0; g < lane_count; ++g) s.requests[g].clear();
    s.by_lane.clear();
    for (std::size_t k = 0; k < requests.size(); ++k) {
      const std::uint8_t j = s.lane_of[k];
      if (j == no_lane) {
        status[k] = errc::segment_not_found;
        continue;
      }
      if (!well_formed && request_shape(requests[k]) != errc::success) continue;
      s.requests[s.by_lane.add(j, static_cast<std::uint32_t>(k))].push_back(requests[k]);
    }
    // The regions this batch's lanes use are held until they returned (also
    // if one throws).
    struct release_regions {
      route_scratch<Request>& scratch;
      ~release_regions() { scratch.held.clear(); }
    } release{s};
    if constexpr (any_registers) attach_registrations(s);

    const std::size_t busy = s.by_lane.size();
    for (std::size_t g = 0; g < busy; ++g) s.status[g].assign(s.requests[g].size(), errc::transfer_failed);
    std::error_code ec;
    if (busy == 1) {
      ec = co_await call_lane<Request>(s.by_lane.key(0), s.requests[0], s.status[0]);
    } else if (busy > 1) {
      // Each lane's call is spawned safe to cancel (detail/guarded_spawn.hpp:
      // a bare co_spawn is not, with Asio 1.81) and with this coroutine's
      // throw_if_cancelled, as if awaited here: a cancelled lane reports
      // through its statuses, as it does when called inline above.
      auto ex = co_await asio::this_coro::executor;
      const bool throws = co_await asio::this_coro::throw_if_cancelled();
      using op_type =
          decltype(detail::guarded_spawn(ex, std::declval<asio::awaitable<std::error_code>>(), asio::deferred));
      std::vector<op_type> ops;
      ops.reserve(busy);
      for (std::size_t g = 0; g < busy; ++g) {
        auto call = detail::throwing_if_cancelled(throws, call_lane<Request>(s.by_lane.key(g), s.requests[g], s.status[g]));
        ops.push_back(detail::guarded_spawn(ex, std::move(call), asio::deferred));
      }
      auto [order, failures, results] = co_await asio::experimental::make_parallel_group(std::move(ops))
                                            .async_wait(asio::experimental::wait_for_all(), asio::deferred);
      for (auto& failure : failures)
        if (failure) std::rethrow_exception(failure);
      for (auto& r : results)
        if (r && !ec) ec = r;
    }
    for (std::size_t g = 0; g < busy; ++g) {
      s.by_lane.scatter(g, s.status[g], status);
      count<Request>(s.by_lane.key(g), s.requests[g], s.status[g]);
    }
    co_return ec;
  }

  // Gives each request of a registering lane that lane's registration of
  // the region its buffer lies in, and holds those regions for the batch.
  template <class Request>
  void attach_registrations(route_scratch<Request>& s) {
    s.held.clear();
    if (core_->regions.empty()) return;
    core_->regions.with_regions([&](auto find) {
      const memory::region_registry::region_ptr* last = nullptr;
      for (std::size_t g = 0; g < s.by_lane.size(); ++g) {
        const std::size_t j = s.by_lane.key(g);
        if (!registers(j)) continue;
        for (Request& r : s.requests[g]) {
          const void* p = buffer_of(r);
          const std::size_t n = static_cast<std::size_t>(r.replica.length);
          if (!last || !(*last)->contains(p, n)) {
            last = find(p, n);
            if (last) s.held.push_back(*last);
          }
          if (last) r.registration = (*last)->registration(j);
        }
      }
    });
  }

  std::unique_ptr<core> core_;
};

}  // namespace corokv::transport
