#pragma once
// What the RDMA lane keeps: its options and counters, and, for its parts
// (rdma_device.hpp, rdma_connections.hpp, rdma_lane.hpp), the state they
// share: the device, the queue pairs, the transfers in flight and the
// scheduler that posts them. One mutex guards the queue pairs and the
// transfers; the lane's parts say which of their functions run under it.

#include <corokv/detail/posted_completion.hpp>
#include <corokv/detail/scratch_pool.hpp>
#include <corokv/error.hpp>
#include <corokv/io/verbs.hpp>
#include <corokv/io/verbs_completion_queue.hpp>
#include <corokv/io/verbs_events.hpp>
#include <corokv/memory/local_segment.hpp>
#include <corokv/transport/destination_groups.hpp>
#include <corokv/transport/lane.hpp>
#include <corokv/transport/rdma_chain.hpp>
#include <corokv/transport/rdma_handshake.hpp>
#include <corokv/transport/rdma_post_scheduler.hpp>
#include <corokv/wire/messages.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
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

// The lane's internals, shared by its parts.
namespace rdma_detail {

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
};

}  // namespace rdma_detail
}  // namespace corokv::transport
