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
//   registered for its batch alone (slower; counted in stats).
// - Queue pairs: one per peer node, set up over a connection to the peer's
//   data server (rdma_handshake.hpp), which stays open while the queue pair
//   lives: this end errors its queue pair at once when the peer goes away.
// - Transfers: a batch's requests are grouped by peer; each group goes out
//   as chains of work requests (rdma_chain.hpp), as many as its send queue
//   and the completion queue have room for; groups that wait for room are
//   served first come, first served (rdma_post_scheduler.hpp). The lane
//   owns each transfer until its last chain is in: the work requests' ids
//   point into it.
// - Completions: a coroutine on the lane's strand (the completion pump)
//   waits on the completion channel's fd while transfers are outstanding
//   (io/verbs_completion_queue.hpp), polls, and completes each transfer on
//   its awaiting coroutine's executor. No thread is started.
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
// Thread-safe: one mutex guards the queue pairs and the transfers in flight.

#include <corokv/detail/posted_completion.hpp>
#include <corokv/error.hpp>
#include <corokv/io/verbs.hpp>
#include <corokv/io/verbs_completion_queue.hpp>
#include <corokv/io/verbs_events.hpp>
#include <corokv/memory/registered_region.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/detail/scratch_pool.hpp>
#include <corokv/net/data_server.hpp>
#include <corokv/transport/destination_groups.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/rdma_chain.hpp>
#include <corokv/transport/rdma_handshake.hpp>
#include <corokv/transport/rdma_post_scheduler.hpp>
#include <corokv/transport/request_shape.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv::transport {

struct rdma_lane_options {
  std::string device;      // a device name, as ibv_devices lists them; empty: the first with an active port
  std::uint8_t port = 0;   // 0: the device's first active port
  int gid_index = 0;       // the port's GID table entry; on RoCE, 0 is the link-local address
  bool required = false;   // no usable device throws at construction instead of leaving the lane idle
  std::uint32_t send_queue_depth = 256;  // work requests in flight per queue pair (bounded by the device)
  std::uint32_t chain_length = 32;       // work requests per signalled chain
  int completion_queue_depth = 4096;    // bounds the work requests in flight over all queue pairs
  std::size_t max_peers = 1024;         // queue pairs this node answers for peers at once
  std::chrono::milliseconds connect_timeout{5000};
};

struct rdma_lane_stats {
  std::uint64_t connections = 0;           // queue pairs this node connected to peers
  std::uint64_t accepted = 0;              // queue pairs made for peers that connected here
  std::uint64_t work_requests = 0;         // posted
  std::uint64_t chains = 0;                // signalled chains posted
  std::uint64_t chain_completions = 0;     // their completions: one per chain
  std::uint64_t completion_events = 0;     // wake-ups by the completion channel
  std::uint64_t ad_hoc_registrations = 0;  // buffers registered for one batch: in no registered region
  std::uint64_t queue_pair_errors = 0;     // queue pairs errored: failure, cancellation, peer gone, device event
  std::uint64_t device_events = 0;         // asynchronous events from the device
};

// What the RDMA lane keeps for a registered region: its memory regions.
class rdma_registration final : public memory::lane_registration {
 public:
  struct piece {
    std::byte* base = nullptr;
    std::size_t size = 0;
    io::verbs::mr_ptr mr;
  };
  // The local key for [p, p + n), if it lies in one piece; 0 and false if not.
  bool find(const void* p, std::size_t n, std::uint32_t& lkey) const noexcept {
    const auto* b = static_cast<const std::byte*>(p);
    for (const piece& x : pieces)
      if (b >= x.base && n <= x.size && static_cast<std::size_t>(b - x.base) <= x.size - n) {
        lkey = x.mr->lkey;
        return true;
      }
    return false;
  }
  std::vector<piece> pieces;
};

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
    boost::asio::co_spawn(s.strand, watch_device(state_), boost::asio::detached);
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
                        if (auto s = weak.lock()) out = s->accept(s, request);
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
  // larger than the device's largest memory region.
  std::error_code register_region(memory::registered_region& region, std::unique_ptr<memory::lane_registration>& out) {
    state& s = *state_;
    if (!s.available) return {};
    auto made = std::make_unique<rdma_registration>();
    const std::size_t piece = static_cast<std::size_t>(std::max<std::uint64_t>(1, s.dev.max_mr_size));
    for (std::size_t at = 0; at < region.size(); at += piece) {
      const std::size_t n = std::min(piece, region.size() - at);
      io::verbs::mr_ptr mr(ibv_reg_mr(s.dev.pd.get(), region.data() + at, n, IBV_ACCESS_LOCAL_WRITE));
      if (!mr) return io::verbs::last_error();
      made->pieces.push_back({region.data() + at, n, std::move(mr)});
    }
    out = std::move(made);
    return {};
  }

 private:
  using tcp = boost::asio::ip::tcp;

  struct remote_segment {
    tcp::endpoint peer;  // its owner's data server
    std::uint64_t base = 0;
    std::uint64_t size = 0;
    std::uint32_t rkey = 0;
  };
  struct published_memory {
    std::shared_ptr<memory::local_segment> memory;
    io::verbs::mr_ptr mr;
  };

  // A queue pair, and its send queue as the scheduler counts it.
  struct queue_pair : rdma_send_queue {
    io::verbs::qp_ptr qp;
    std::shared_ptr<tcp::socket> link;  // the data-server connection it was set up over
    ~queue_pair() {
      if (link) {
        boost::system::error_code ignored;
        link->close(ignored);
      }
    }
  };

  struct transfer_group;
  // Where the tag of a work request points: its group and its place.
  struct work_tag {
    transfer_group* group = nullptr;
    std::uint32_t work = 0;
  };
  struct target {
    std::byte* local = nullptr;
    std::uint32_t lkey = 0;
    std::uint64_t remote = 0;
    std::uint32_t rkey = 0;
  };
  // A batch's requests to one peer (rdma_post_scheduler.hpp).
  struct transfer_group : rdma_post_group {
    bool read = true;
    tcp::endpoint peer;
    std::shared_ptr<queue_pair> qp;
    std::span<const std::uint32_t> index;  // positions in the lane call (held by the batch's by_peer)
    std::vector<target> targets;
    std::vector<errc> refused;  // per position: why it was never given to the plan, or success
    std::vector<work_tag> tags;
    std::vector<ibv_send_wr> wrs;  // one chain's work requests and their lists, reused chain after chain
    std::vector<ibv_sge> sges;
  };
  using peer_groups = destination_groups<tcp::endpoint>;
  struct transfer_op : rdma_post_batch<transfer_group> {
    explicit transfer_op(detail::scratch_pool<peer_groups>::lease leased) : by_peer(std::move(leased)) {
      by_peer->clear();
    }
    detail::scratch_pool<peer_groups>::lease by_peer;  // the groups' request positions, reused batch after batch
    std::vector<io::verbs::mr_ptr> ad_hoc;  // registrations of buffers in no registered region
    bool cancelled = false;
    std::unique_ptr<detail::posted_completion> handler;  // the awaiting coroutine's
    boost::asio::cancellation_slot slot;
  };
  using done_list = std::vector<std::shared_ptr<transfer_op>>;

  struct state {
    state(boost::asio::any_io_executor e, rdma_lane_options o)
        : executor(e), strand(boost::asio::make_strand(e)), options(std::move(o)) {}
    // Transfers and the lane's coroutines hold the state, so by now none is
    // in flight and no wait is pending. Every queue pair is errored and the
    // completion queue drained; then members go in reverse order: memory
    // regions and queue pairs, the event watcher and the completion queue
    // (which give their fds back from Asio and acknowledge their events),
    // the protection domain and the device.
    ~state() {
      if (!available) return;
      for (auto& [peer, q] : peers)
        if (!std::exchange(q->broken, true)) (void)to_error(*q);
      cq->drain([](const ibv_wc&) {});
    }

    boost::asio::any_io_executor executor;
    boost::asio::strand<boost::asio::any_io_executor> strand;  // the pump, the event watcher, their closing
    rdma_lane_options options;
    io::verbs::device dev;
    rdma_port_limits port;  // what the device offers a queue pair
    std::unique_ptr<io::verbs::completion_queue> cq;
    std::unique_ptr<io::verbs::device_events> events;
    bool available = false;
    std::string why_unavailable;
    detail::scratch_pool<peer_groups> grouping;  // outlives the transfers that lease from it
    std::uint32_t depth = 1;
    std::atomic<bool> port_active{true};
    std::atomic<bool> usable{true};  // false once the completion queue failed: nothing would complete

    std::mutex mu;  // guards everything below
    std::unordered_map<segment_id, remote_segment> segments;
    std::map<tcp::endpoint, std::shared_ptr<queue_pair>> peers;
    std::unordered_map<segment_id, published_memory> published;
    std::vector<std::weak_ptr<queue_pair>> responders;  // made for peers: errored on device events too
    // Transfers in flight, owned here until they complete: the tags of their
    // work requests point into them.
    std::vector<std::shared_ptr<transfer_op>> active;
    rdma_post_scheduler<transfer_group> scheduler;  // what is posted when
    bool pump_running = false;
    bool shutting_down = false;

    std::atomic<std::uint64_t> connections{0}, accepted{0}, work_requests{0}, chains{0}, completion_events{0},
        ad_hoc{0}, qp_errors{0}, device_events{0}, chain_completions{0};

    // The queue pair to error, so that what it has outstanding flushes;
    // false if it could not be, and then it is destroyed: nothing it had
    // outstanding touches memory any more (and nothing of it completes).
    bool to_error(queue_pair& q) {
      qp_errors.fetch_add(1, std::memory_order_relaxed);
      if (!q.qp || !io::verbs::to_error(q.qp.get())) return true;
      q.qp.reset();
      return false;
    }

    std::shared_ptr<queue_pair> make_queue_pair(std::uint32_t send_depth, std::error_code& ec) {
      auto q = std::make_shared<queue_pair>();
      q->depth = send_depth;
      q->qp = io::verbs::make_rc_queue_pair(dev, cq->get(), send_depth, 1, ec);
      if (ec) return nullptr;
      return q;
    }
    std::error_code connect_queue_pair(queue_pair& q, const wire::rdma_endpoint& other, std::uint32_t psn) const {
      const rdma_agreement a = agree(port, other);
      return io::verbs::connect_rc(dev, q.qp.get(), {a.gid, a.qpn, a.psn, static_cast<ibv_mtu>(a.mtu), a.lid, a.reads_out, a.reads_in},
                               psn);
    }

    // The data server's side of rdma_connect: a queue pair for the peer,
    // held by the connection the peer asked on. It only answers the peer's
    // reads and writes, so its own send queue is one entry deep.
    std::pair<wire::rdma_connect_response, std::shared_ptr<void>> accept(const std::shared_ptr<state>& self,
                                                                         const wire::rdma_connect_request& request) {
      std::pair<wire::rdma_connect_response, std::shared_ptr<void>> out{{errc::invalid_argument, {}}, nullptr};
      if (!available) return out;
      {
        std::lock_guard lock(mu);
        std::erase_if(responders, [](const auto& w) { return w.expired(); });
        if ((out.first.status = admit_rdma_peer(responders.size(), options.max_peers)) != errc::success)
          return out;
      }
      std::error_code ec;
      auto q = make_queue_pair(1, ec);
      const std::uint32_t psn = io::verbs::random_psn();
      if (!ec) ec = connect_queue_pair(*q, request.initiator, psn);
      if (ec) {
        out.first.status = errc::transfer_failed;
        return out;
      }
      out.first = {errc::success, own_rdma_endpoint(port, q->qp->qp_num, psn)};
      {
        std::lock_guard lock(mu);
        responders.push_back(q);
      }
      accepted.fetch_add(1, std::memory_order_relaxed);
      // The device must outlive the queue pair: the holder keeps both.
      struct held {
        std::shared_ptr<state> device_owner;
        std::shared_ptr<queue_pair> qp;
      };
      out.second = std::make_shared<held>(held{self, std::move(q)});
      return out;
    }
  };

  // What the scheduler posts through, under the lock; the transfers it
  // finishes are completed once the lock is let go (complete()).
  struct verbs_device {
    state& s;
    done_list& done;
    std::size_t post(transfer_group& g, rdma_chain_plan::chain chain) { return post_chain(s, g, chain); }
    bool to_error(rdma_send_queue& q) { return s.to_error(static_cast<queue_pair&>(q)); }
    void finished(rdma_post_batch<transfer_group>& b) {
      auto it = std::find_if(s.active.begin(), s.active.end(), [&](const auto& a) { return a.get() == &b; });
      if (it == s.active.end()) return;
      done.push_back(std::move(*it));
      s.active.erase(it);
    }
  };

  // Under the lock: a queue pair errored once (or destroyed, see to_error).
  static void break_queue_pair(state& s, queue_pair& q, done_list& done) {
    verbs_device device{s, done};
    s.scheduler.break_queue(device, q);
  }

  // ------------------------------------------------------------ connecting
  // A connected queue pair to `peer`'s node, or null if it cannot be had.
  static boost::asio::awaitable<std::shared_ptr<queue_pair>> queue_pair_for(std::shared_ptr<state> s, tcp::endpoint peer) {
    {
      std::lock_guard lock(s->mu);
      if (auto it = s->peers.find(peer); it != s->peers.end() && !it->second->broken) co_return it->second;
    }
    auto q = co_await connect(s, peer);
    if (!q) co_return nullptr;
    std::shared_ptr<queue_pair> replaced;  // destroyed outside the lock (ibv_destroy_qp may wait for event acks)
    {
      std::lock_guard lock(s->mu);
      replaced = std::exchange(s->peers[peer], q);
    }
    co_return q;
  }

  // The exchange (rdma_handshake.hpp) and its deadline run on this
  // coroutine's executor.
  static boost::asio::awaitable<std::shared_ptr<queue_pair>> connect(std::shared_ptr<state> s, tcp::endpoint peer) {
    namespace asio = boost::asio;
    std::error_code ec;
    auto q = s->make_queue_pair(s->depth, ec);
    if (!q) co_return nullptr;
    const std::uint32_t psn = io::verbs::random_psn();
    const wire::rdma_endpoint own = own_rdma_endpoint(s->port, q->qp->qp_num, psn);
    rdma_exchange_result exchanged = co_await exchange_rdma_endpoints(peer, own, s->options.connect_timeout);
    if (!exchanged.responder || s->connect_queue_pair(*q, *exchanged.responder, psn)) co_return nullptr;
    q->link = std::move(exchanged.link);
    s->connections.fetch_add(1, std::memory_order_relaxed);
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, watch_link(std::weak_ptr<state>(s), std::weak_ptr<queue_pair>(q), q->link), asio::detached);
    co_return q;
  }

  // The peer's end of the link closes when its process ends: the queue pair
  // is errored at once, so transfers to it fail now rather than after the
  // transport's retries.
  static boost::asio::awaitable<void> watch_link(std::weak_ptr<state> weak, std::weak_ptr<queue_pair> weak_qp,
                                                 std::shared_ptr<tcp::socket> socket) {
    std::array<std::byte, 1> byte{};
    (void)co_await socket->async_read_some(boost::asio::buffer(byte),
                                           boost::asio::as_tuple(boost::asio::use_awaitable));
    auto s = weak.lock();
    auto q = weak_qp.lock();
    if (!s || !q) co_return;
    done_list done;
    {
      std::lock_guard lock(s->mu);
      break_queue_pair(*s, *q, done);
    }
    for (auto& d : done) complete(d);
  }

  // ------------------------------------------------------------ device events
  static boost::asio::awaitable<void> watch_device(std::shared_ptr<state> s) {
    for (;;) {
      ibv_async_event event{};
      if (co_await s->events->next(event)) co_return;
      s->device_events.fetch_add(1, std::memory_order_relaxed);
      // Acknowledged before the lock: destroying a queue pair waits for its
      // events' acknowledgements, and may happen under the lock.
      const ibv_event_type type = event.event_type;
      const void* which_qp = event.element.qp;  // compared, never used
      ibv_ack_async_event(&event);
      done_list done;
      {
        std::lock_guard lock(s->mu);
        switch (type) {
          case IBV_EVENT_QP_FATAL:
          case IBV_EVENT_QP_REQ_ERR:
          case IBV_EVENT_QP_ACCESS_ERR:
            for (auto& [peer, q] : s->peers)
              if (q->qp.get() == which_qp) break_queue_pair(*s, *q, done);
            for (auto& w : s->responders)
              if (auto q = w.lock(); q && q->qp.get() == which_qp) break_queue_pair(*s, *q, done);
            break;
          case IBV_EVENT_PORT_ERR:
          case IBV_EVENT_DEVICE_FATAL:
            s->port_active = false;
            for (auto& [peer, q] : s->peers) break_queue_pair(*s, *q, done);
            for (auto& w : s->responders)
              if (auto q = w.lock()) break_queue_pair(*s, *q, done);
            break;
          case IBV_EVENT_CQ_ERR:
            // The completion queue overran or failed: nothing will complete
            // through it. Its queue pairs are destroyed, their transfers
            // fail, and the lane carries nothing more.
            s->usable = false;
            fail_everything(*s, done, /*drain=*/false);
            break;
          case IBV_EVENT_PORT_ACTIVE:
            s->port_active = true;
            break;
          default:
            break;
        }
      }
      for (auto& d : done) complete(d);
    }
  }

  // Under the lock: every queue pair destroyed (after which none of them
  // touches memory), the completion queue drained of what is left, and
  // every transfer still out finished with transfer_failed.
  static void fail_everything(state& s, done_list& done, bool drain) {
    auto destroy = [&](queue_pair& q) {
      q.qp.reset();
      s.scheduler.forget(q);
    };
    for (auto& [peer, q] : s.peers) destroy(*q);
    for (auto& op : s.active)
      for (auto& g : op->groups)
        if (g->qp) destroy(*g->qp);
    if (drain) s.cq->drain([&](const ibv_wc& wc) { on_completion(s, wc, done); });
    verbs_device device{s, done};
    s.scheduler.abandon_all(device);
  }

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
      g->qp = co_await queue_pair_for(s, g->peer);
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
          const bool start = pump_needed(*s);
          lock.unlock();
          if (start) start_pump(s);
          for (auto& d : done) complete(d);
        },
        token, std::move(lane_state), std::move(batch));
  }

  // Under the lock: the chain's work requests to the device. How many it
  // took: all of them, or those before the one it refused.
  static std::size_t post_chain(state& s, transfer_group& g, rdma_chain_plan::chain chain) {
    std::vector<ibv_send_wr>& wrs = g.wrs;
    std::vector<ibv_sge>& sges = g.sges;
    wrs.resize(chain.count);
    sges.resize(chain.count);
    for (std::size_t i = 0; i < chain.count; ++i) {
      const std::size_t w = chain.first + i;
      const rdma_work& work = g.plan.works()[w];
      const target& t = g.targets[work.request];
      sges[i].addr = reinterpret_cast<std::uintptr_t>(t.local + work.offset);
      sges[i].length = work.length;
      sges[i].lkey = t.lkey;
      ibv_send_wr& wr = wrs[i];
      wr = {};
      wr.wr_id = reinterpret_cast<std::uintptr_t>(&g.tags[w]);
      wr.sg_list = &sges[i];
      wr.num_sge = 1;
      wr.opcode = g.read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
      wr.send_flags = i + 1 == chain.count ? IBV_SEND_SIGNALED : 0;
      wr.wr.rdma.remote_addr = t.remote + work.offset;
      wr.wr.rdma.rkey = t.rkey;
      wr.next = i + 1 < chain.count ? &wrs[i + 1] : nullptr;
    }
    s.work_requests.fetch_add(chain.count, std::memory_order_relaxed);
    s.chains.fetch_add(1, std::memory_order_relaxed);
    ibv_send_wr* bad = nullptr;
    if (ibv_post_send(g.qp->qp.get(), wrs.data(), &bad) == 0) return chain.count;
    return bad ? static_cast<std::size_t>(bad - wrs.data()) : 0;
  }

  // Outside the lock: hands the result to the awaiting coroutine's executor.
  static void complete(const std::shared_ptr<transfer_op>& op) {
    if (op->slot.is_connected()) op->slot.clear();
    const std::error_code ec = op->cancelled ? std::error_code(errc::cancelled) : std::error_code{};
    std::unique_ptr<detail::posted_completion> handler = std::move(op->handler);
    handler->post(ec);
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
    for (auto& d : done) complete(d);
  }

  static void shut_down(const std::shared_ptr<state>& s) {
    done_list done;
    {
      std::lock_guard lock(s->mu);
      s->shutting_down = true;
      if (!s->active.empty()) fail_everything(*s, done, /*drain=*/true);
    }
    for (auto& d : done) complete(d);
    boost::asio::post(s->strand, [s] {
      s->cq->close();
      s->events->close();
    });
  }

  // ------------------------------------------------------------ completions
  // Under the lock: whether the caller must start the pump, once it let go
  // of the lock (co_spawn may run the pump at once, on this thread).
  static bool pump_needed(state& s) {
    if (s.pump_running || s.active.empty() || s.shutting_down) return false;
    s.pump_running = true;
    return true;
  }
  static void start_pump(const std::shared_ptr<state>& s) {
    boost::asio::co_spawn(s->strand, pump(s), boost::asio::detached);
  }

  // Runs while transfers are outstanding: waits for the completion channel,
  // then polls until empty. If the channel fails, nothing can complete: the
  // queue pairs are destroyed and the transfers fail.
  static boost::asio::awaitable<void> pump(std::shared_ptr<state> s) {
    for (;;) {
      {
        std::lock_guard lock(s->mu);
        if (s->active.empty() || s->shutting_down) {
          s->pump_running = false;
          co_return;
        }
      }
      const std::error_code waited = co_await s->cq->wait();
      done_list done;
      {
        std::lock_guard lock(s->mu);
        if (waited) {
          s->pump_running = false;
          if (!s->shutting_down) s->usable = false;
          fail_everything(*s, done, /*drain=*/true);
        } else {
          s->completion_events.fetch_add(1, std::memory_order_relaxed);
          s->cq->drain([&](const ibv_wc& wc) { on_completion(*s, wc, done); });
        }
      }
      for (auto& d : done) complete(d);
      if (waited) co_return;
    }
  }

  // Under the lock.
  static void on_completion(state& s, const ibv_wc& wc, done_list& done) {
    auto* tag = reinterpret_cast<work_tag*>(static_cast<std::uintptr_t>(wc.wr_id));
    if (!tag) return;
    const auto outcome = wc.status == IBV_WC_SUCCESS         ? rdma_completion::success
                         : wc.status == IBV_WC_WR_FLUSH_ERR ? rdma_completion::flushed
                                                             : rdma_completion::failed;
    verbs_device device{s, done};
    if (s.scheduler.complete(device, *tag->group, tag->work, outcome) != 0)
      s.chain_completions.fetch_add(1, std::memory_order_relaxed);
  }

  std::shared_ptr<state> state_;
};

static_assert(lane<rdma_lane>);
static_assert(publishing_lane<rdma_lane>);
static_assert(registering_lane<rdma_lane>);
static_assert(directory_following_lane<rdma_lane>);
static_assert(serving_lane<rdma_lane>);

}  // namespace corokv::transport
