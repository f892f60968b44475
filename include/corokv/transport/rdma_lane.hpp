#pragma once
// The RDMA verbs lane: replicas on nodes whose segments are registered with
// an RDMA device, reached by one-sided RDMA READ (get) and WRITE (put) over
// reliable-connected queue pairs (rank rdma: after memcpy, before TCP).
//
// - Device: by name, or the first with an active port; one protection
//   domain, one completion queue. No device: the lane stays idle (every
//   segment unreachable), unless options.required.
// - Memory: this node's segments are registered when published (their rkey
//   and the port's GID go out in the segment endpoints); every region the
//   store registers (its buffer pool, register_buffer) once, split at the
//   device's largest memory region. A buffer in no registered region is
//   registered for its batch alone (slower; counted in stats)
//   (rdma_registration.hpp).
// - Queue pairs: one per peer node, set up over a connection to the peer's
//   data server (rdma_handshake.hpp), which stays open while the queue pair
//   lives: this end errors its queue pair at once when the peer goes away
//   (rdma_connections.hpp).
// - Transfers: a batch's requests are grouped by peer; each group goes out
//   as chains of work requests (rdma_chain.hpp), as many as its send queue
//   and the completion queue have room for; groups that wait for room are
//   served first come, first served (rdma_post_scheduler.hpp). The lane
//   owns each transfer until its last chain is in: the work requests' ids
//   point into it.
// - Completions: a coroutine on the lane's strand (the completion pump)
//   waits on the completion channel's fd while transfers are outstanding
//   (io/verbs_completion_queue.hpp), polls, and completes each transfer on
//   its awaiting coroutine's executor. No thread is started
//   (rdma_device.hpp, with the device's asynchronous events).
// - Failures: a failed or flushed work request fails its request
//   (transfer_failed) and errors its queue pair, which is rebuilt on next
//   use; the device's async events (queue pair fatal, port down) do the
//   same for the queue pairs they name. A terminal cancellation errors the
//   queue pairs of the batch and completes only once their flushed work
//   requests are in: nothing writes into the caller's buffers afterwards.
//   Other batches in flight to the same peers then fail with
//   transfer_failed (one queue pair per peer). A queue pair that cannot be
//   errored is destroyed; a completion queue or channel that fails, or the
//   lane's destruction, destroys them all and fails what is out.
//
// Thread-safe: one mutex guards the queue pairs and the transfers in flight
// (rdma_lane_state.hpp: the options, the counters and what the parts share).

#include <corokv/detail/posted_completion.hpp>
#include <corokv/error.hpp>
#include <corokv/io/verbs.hpp>
#include <corokv/memory/registered_region.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/net/data_server.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/rdma_connections.hpp>
#include <corokv/transport/rdma_device.hpp>
#include <corokv/transport/rdma_lane_state.hpp>
#include <corokv/transport/rdma_registration.hpp>
#include <corokv/transport/request_shape.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace corokv::transport {

class rdma_lane {
 public:
  // Opens the device. No usable device leaves the lane idle (available()
  // false, why in unavailable_reason()), or throws if options.required.
  rdma_lane(boost::asio::any_io_executor ex, rdma_lane_options options = {})
      : state_(std::make_shared<state>(ex, std::move(options))) {
    state& s = *state_;
    std::error_code ec = io::verbs::open_device(s.options.device, s.options.port, s.options.gid_index, s.dev);
    if (!ec) {
      s.cq = std::make_unique<io::verbs::completion_queue>(
          ex, s.dev.context.get(), std::min(s.options.completion_queue_depth, s.dev.max_cqe), ec);
      if (!ec) s.events = std::make_unique<io::verbs::device_events>(ex, s.dev.context.get(), ec);
    }
    if (ec) {
      s.why_unavailable = "rdma: " + (s.options.device.empty() ? std::string("no device with an active port")
                                                               : "device " + s.options.device) +
                          ": " + ec.message();
      s.events.reset();
      s.cq.reset();
      s.dev.pd.reset();  // before the device it belongs to
      s.dev.context.reset();
      if (s.options.required) throw boost::system::system_error(ec, "corokv: " + s.why_unavailable);
      return;
    }
    s.scheduler.set_capacity(s.cq->capacity());
    s.port = {s.dev.gid, static_cast<std::uint8_t>(s.dev.mtu), s.dev.lid, s.dev.initiator_depth, s.dev.responder_resources};
    s.depth = std::max<std::uint32_t>(
        1, std::min<std::uint32_t>(s.options.send_queue_depth, static_cast<std::uint32_t>(s.dev.max_qp_wr)));
    s.available = true;
    boost::asio::co_spawn(s.strand, rdma_detail::watch_device(state_), boost::asio::detached);
  }
  rdma_lane(rdma_lane&&) noexcept = default;
  // Transfers still out fail (their queue pairs are destroyed first, so
  // nothing touches their buffers afterwards); the lane's waits are
  // cancelled on its strand.
  ~rdma_lane() {
    if (state_ && state_->available) shut_down(state_);
  }

  std::string_view name() const noexcept { return "rdma"; }
  bool available() const noexcept { return state_->available; }
  const std::string& unavailable_reason() const noexcept { return state_->why_unavailable; }
  std::string device_name() const { return state_->dev.name; }
  std::string gid() const { return state_->available ? io::verbs::gid_text(state_->dev.gid) : std::string(); }

  rdma_lane_stats stats() const noexcept {
    const state& s = *state_;
    auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    return {get(s.connections),       get(s.accepted), get(s.work_requests), get(s.chains), get(s.chain_completions),
            get(s.completion_events), get(s.ad_hoc),   get(s.qp_errors),     get(s.device_events)};
  }

  // Answers peers' rdma_connect on this node's data server (serving_lane):
  // the queue pair made for the peer lives as long as the connection it
  // asked on. After the lane is gone, refused (invalid_argument).
  void serve(net::data_server& server) {
    server.handle(wire::message_type::rdma_connect,
                  net::call_handler<wire::rdma_connect_request>(
                      [weak = std::weak_ptr<state>(state_)](const wire::rdma_connect_request& request,
                                                            net::data_connection& connection) {
                        std::pair<wire::rdma_connect_response, std::shared_ptr<void>> out{{errc::invalid_argument, {}},
                                                                                          nullptr};
                        if (auto s = weak.lock()) out = rdma_detail::accept_peer(s, request);
                        connection.hold(wire::message_type::rdma_connect, std::move(out.second));
                        return out.first;
                      }));
  }

  // A segment whose owner registered it with a device and runs a data
  // server, while this lane has a device and its port is up.
  lane_rank rank(const segment_route& where) {
    state& s = *state_;
    if (!s.available || !s.port_active.load(std::memory_order_relaxed) || !s.usable.load(std::memory_order_relaxed) ||
        !where.descriptor)
      return ranks::unreachable;
    {
      std::lock_guard lock(s.mu);
      if (auto it = s.segments.find(where.id); it != s.segments.end()) return ranks::rdma;
    }
    const segment_endpoints& e = where.descriptor->endpoints;
    if (e.rdma_gid.empty() || e.tcp_port == 0 || where.descriptor->tier != storage_tier::memory)
      return ranks::unreachable;
    boost::system::error_code bad_address;
    const auto address = boost::asio::ip::make_address(e.tcp_host, bad_address);
    if (bad_address) return ranks::unreachable;
    remote_segment r{boost::asio::ip::tcp::endpoint(address, e.tcp_port), e.base_address, where.descriptor->size,
                     e.rdma_rkey};
    std::lock_guard lock(s.mu);
    s.segments.insert_or_assign(where.id, r);
    return ranks::rdma;
  }

  boost::asio::awaitable<std::error_code> read(std::span<const memory::read_request> requests, std::span<errc> status) {
    co_return co_await transfer<memory::read_request>(state_, requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const memory::write_request> requests, std::span<errc> status) {
    co_return co_await transfer<memory::write_request>(state_, requests, status);
  }

  // Registers one of this node's segments for remote reads and writes. A
  // segment larger than the device's largest memory region is left to the
  // other lanes (its endpoints then name no GID).
  std::error_code publish(const published_segment& segment, segment_endpoints& where) {
    state& s = *state_;
    if (!s.available || segment.memory->size() > s.dev.max_mr_size) return {};
    io::verbs::mr_ptr mr(ibv_reg_mr(s.dev.pd.get(), segment.memory->data(), segment.memory->size(),
                                IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE));
    if (!mr) return io::verbs::last_error();
    where.rdma_rkey = mr->rkey;
    where.rdma_gid = io::verbs::gid_text(s.dev.gid);
    std::lock_guard lock(s.mu);
    s.published[segment.id] = published_memory{segment.memory, std::move(mr)};
    return {};
  }
  // Deregisters it: a peer's transfer still running on it fails on that
  // peer, which then tries its next replica.
  void withdraw(segment_id id) {
    published_memory gone;
    std::lock_guard lock(state_->mu);
    if (auto it = state_->published.find(id); it != state_->published.end()) {
      gone = std::move(it->second);
      state_->published.erase(it);
    }
  }

  void forget(std::span<const segment_id> gone) {
    std::lock_guard lock(state_->mu);
    for (segment_id id : gone) state_->segments.erase(id);
  }

  // Registers a region of the caller's memory with the device, in pieces no
  // larger than the device's largest memory region (rdma_registration.hpp).
  std::error_code register_region(memory::registered_region& region, std::unique_ptr<memory::lane_registration>& out) {
    state& s = *state_;
    if (!s.available) return {};
    return register_rdma_region(s.dev.pd.get(), s.dev.max_mr_size, region, out);
  }

 private:
  // The lane's parts: rdma_lane_state.hpp (what it keeps), rdma_device.hpp
  // (posting and completions), rdma_connections.hpp (the queue pairs).
  using state = rdma_detail::state;
  using transfer_op = rdma_detail::transfer_op;
  using transfer_group = rdma_detail::transfer_group;
  using done_list = rdma_detail::done_list;
  using verbs_device = rdma_detail::verbs_device;
  using published_memory = rdma_detail::published_memory;
  using remote_segment = rdma_detail::remote_segment;

  // ------------------------------------------------------------ transfers
  static boost::asio::awaitable<bool> terminal_cancellation_requested() {
    auto cs = co_await boost::asio::this_coro::cancellation_state;
    co_return (cs.cancelled() & boost::asio::cancellation_type::terminal) != boost::asio::cancellation_type::none;
  }

  template <class Request>
  static boost::asio::awaitable<std::error_code> transfer(std::shared_ptr<state> s, std::span<const Request> requests,
                                                          std::span<errc> status) {
    namespace asio = boost::asio;
    constexpr bool reading = std::is_same_v<Request, memory::read_request>;
    if (!s->available) {
      std::fill(status.begin(), status.end(), errc::segment_not_found);
      co_return std::error_code{};
    }
    auto op = std::make_shared<transfer_op>(s->grouping.take());
    // Group by peer; check each range against its segment and its buffer
    // (request_shape.hpp: for a caller other than the router).
    {
      std::lock_guard lock(s->mu);
      for (std::size_t k = 0; k < requests.size(); ++k) {
        const replica_descriptor& r = requests[k].replica;
        if ((status[k] = request_shape(requests[k])) != errc::success) continue;
        auto it = s->segments.find(r.segment);
        if (it == s->segments.end() || r.length == 0 || r.offset > it->second.size ||
            r.length > it->second.size - r.offset) {
          status[k] = errc::segment_not_found;
          continue;
        }
        const remote_segment& seg = it->second;
        const std::size_t at = op->by_peer->add(seg.peer, static_cast<std::uint32_t>(k));
        if (at == op->groups.size()) {
          transfer_group& g = op->add();
          g.read = reading;
          g.peer = seg.peer;
        }
        std::byte* local;
        if constexpr (reading)
          local = static_cast<std::byte*>(requests[k].destination.data());
        else
          local = static_cast<std::byte*>(const_cast<void*>(requests[k].source.data()));
        op->groups[at]->targets.push_back({local, 0, seg.base + r.offset, seg.rkey});
        op->groups[at]->refused.push_back(errc::success);
      }
      for (std::size_t at = 0; at < op->groups.size(); ++at) op->groups[at]->index = op->by_peer->index(at);
    }
    // Local keys: the registered region's, or a registration for this batch.
    for (auto& g : op->groups) {
      for (std::size_t j = 0; j < g->index.size(); ++j) {
        const Request& r = requests[g->index[j]];
        const std::size_t n = static_cast<std::size_t>(r.replica.length);
        const auto* registration = static_cast<const rdma_registration*>(r.registration);
        if (registration && registration->find(g->targets[j].local, n, g->targets[j].lkey)) continue;
        io::verbs::mr_ptr mr(ibv_reg_mr(s->dev.pd.get(), g->targets[j].local, n, reading ? IBV_ACCESS_LOCAL_WRITE : 0));
        if (!mr) {
          g->refused[j] = errc::transfer_failed;
          continue;
        }
        s->ad_hoc.fetch_add(1, std::memory_order_relaxed);
        g->targets[j].lkey = mr->lkey;
        op->ad_hoc.push_back(std::move(mr));
      }
    }
    // A queue pair per peer. A cancellation before anything was posted
    // leaves nothing to undo. (The store's coroutines run with
    // throw_if_cancelled(false).)
    for (auto& g : op->groups) {
      if (co_await terminal_cancellation_requested()) break;
      g->qp = co_await rdma_detail::queue_pair_for(s, g->peer);
      g->queue = g->qp.get();
      if (!g->qp) std::fill(g->refused.begin(), g->refused.end(), errc::transfer_failed);
    }
    if (co_await terminal_cancellation_requested()) {
      for (auto& g : op->groups)
        for (std::uint32_t k : g->index) status[k] = errc::cancelled;
      co_return std::error_code(errc::cancelled);
    }

    // Plans: a refused request is given to the plan with no work.
    std::vector<std::uint64_t> lengths;
    for (auto& g : op->groups) {
      lengths.clear();
      for (std::size_t j = 0; j < g->index.size(); ++j)
        lengths.push_back(g->refused[j] == errc::success ? requests[g->index[j]].replica.length : 0);
      g->plan.reset(lengths, s->dev.max_message, s->options.chain_length);
      g->tags.resize(g->plan.works().size());
      for (std::size_t w = 0; w < g->tags.size(); ++w) g->tags[w] = {g.get(), static_cast<std::uint32_t>(w)};
    }
    const std::error_code ec = co_await run(s, op, asio::use_awaitable);
    for (std::size_t at = 0; at < op->groups.size(); ++at) {
      const transfer_group& g = *op->groups[at];
      op->by_peer->scatter(at, g.plan.statuses(), status);
      for (std::size_t j = 0; j < g.index.size(); ++j)
        if (g.refused[j] != errc::success) status[g.index[j]] = g.refused[j];
    }
    co_return ec;
  }

  // Starts the batch on the scheduler and completes once all of it is in:
  // the verbs awaiter. Completes on the awaiting coroutine's executor.
  template <class Token>
  static auto run(std::shared_ptr<state> lane_state, std::shared_ptr<transfer_op> batch, Token&& token) {
    return boost::asio::async_initiate<Token, void(std::error_code)>(
        [](auto handler, std::shared_ptr<state> s, std::shared_ptr<transfer_op> op) {
          namespace asio = boost::asio;
          auto slot = asio::get_associated_cancellation_slot(handler);
          done_list done;
          std::unique_lock lock(s->mu);
          op->handler = detail::posted_completion::make(std::move(handler), s->executor);
          s->active.push_back(op);
          const bool usable = !s->shutting_down && s->usable;
          if (usable && slot.is_connected()) {
            op->slot = slot;
            slot.assign([weak = std::weak_ptr<state>(s), op](asio::cancellation_type type) {
              if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none) return;
              if (auto alive = weak.lock()) cancel(alive, op);
            });
          }
          verbs_device device{*s, done};
          s->scheduler.start(device, *op, usable);
          const bool start = rdma_detail::pump_needed(*s);
          lock.unlock();
          if (start) rdma_detail::start_pump(s);
          for (auto& d : done) rdma_detail::complete(d);
        },
        token, std::move(lane_state), std::move(batch));
  }

  static void cancel(const std::shared_ptr<state>& s, const std::shared_ptr<transfer_op>& op) {
    done_list done;
    {
      std::lock_guard lock(s->mu);
      if (op->finished || op->cancelled) return;
      op->cancelled = true;
      verbs_device device{*s, done};
      s->scheduler.cancel(device, *op);
    }
    for (auto& d : done) rdma_detail::complete(d);
  }

  static void shut_down(const std::shared_ptr<state>& s) {
    done_list done;
    {
      std::lock_guard lock(s->mu);
      s->shutting_down = true;
      if (!s->active.empty()) rdma_detail::fail_everything(*s, done, /*drain=*/true);
    }
    for (auto& d : done) rdma_detail::complete(d);
    boost::asio::post(s->strand, [s] {
      s->cq->close();
      s->events->close();
    });
  }

  std::shared_ptr<state> state_;
};

static_assert(lane<rdma_lane>);
static_assert(publishing_lane<rdma_lane>);
static_assert(registering_lane<rdma_lane>);
static_assert(directory_following_lane<rdma_lane>);
static_assert(serving_lane<rdma_lane>);

}  // namespace corokv::transport
