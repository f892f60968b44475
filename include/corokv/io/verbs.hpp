#pragma once
// libibverbs resources, owned: a device opened with its protection domain
// and the port it uses, memory regions, reliable-connected queue pairs and
// their state changes. Everything here is synchronous and thread-safe as
// libibverbs is; waiting for completions is io/verbs_completion_queue.hpp's.
//
// Needs <infiniband/verbs.h> and libibverbs (the corokv::rdma target).

#include <corokv/error.hpp>

#include <fcntl.h>
#include <infiniband/verbs.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <system_error>

namespace corokv::io::verbs {

struct context_deleter {
  void operator()(ibv_context* c) const noexcept { ibv_close_device(c); }
};
struct pd_deleter {
  void operator()(ibv_pd* p) const noexcept { ibv_dealloc_pd(p); }
};
struct mr_deleter {
  void operator()(ibv_mr* m) const noexcept { ibv_dereg_mr(m); }
};
struct qp_deleter {
  void operator()(ibv_qp* q) const noexcept { ibv_destroy_qp(q); }
};
using context_ptr = std::unique_ptr<ibv_context, context_deleter>;
using pd_ptr = std::unique_ptr<ibv_pd, pd_deleter>;
using mr_ptr = std::unique_ptr<ibv_mr, mr_deleter>;
using qp_ptr = std::unique_ptr<ibv_qp, qp_deleter>;

using gid_bytes = std::array<std::uint8_t, 16>;

// The textual form segment endpoints carry: 8 groups of 4 hex digits.
inline std::string gid_text(const gid_bytes& g) {
  std::string out;
  char part[6];
  for (std::size_t i = 0; i < g.size(); i += 2) {
    std::snprintf(part, sizeof part, "%s%02x%02x", i ? ":" : "", g[i], g[i + 1]);
    out += part;
  }
  return out;
}

inline std::error_code last_error(int err = errno) { return {err ? err : EIO, std::generic_category()}; }

// Makes an fd non-blocking; the verbs event fds are blocking by default.
inline std::error_code make_non_blocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return last_error();
  return {};
}

// One opened device: its context, protection domain, the port and GID the
// lane uses, and the limits that matter for transfers.
struct device {
  context_ptr context;
  pd_ptr pd;
  std::string name;
  std::uint8_t port = 1;
  int gid_index = 0;
  gid_bytes gid{};
  ibv_mtu mtu = IBV_MTU_1024;
  std::uint16_t lid = 0;          // InfiniBand addresses by LID within a subnet; RoCE by GID alone
  std::uint64_t max_mr_size = 0;
  std::uint32_t max_message = 0;  // the port's largest message
  int max_qp_wr = 0;
  int max_sge = 0;
  std::uint8_t initiator_depth = 0;      // RDMA reads a queue pair may have outstanding
  std::uint8_t responder_resources = 0;  // RDMA reads a queue pair can serve at once
  int max_cqe = 0;
};

// Opens `name` (empty: the first device with an active port) on `port` (0:
// its first active port). A device list with no such device leaves `out`
// empty and returns no_such_device; any verbs failure returns its errno.
inline std::error_code open_device(const std::string& name, std::uint8_t port, int gid_index, device& out) {
  int count = 0;
  std::unique_ptr<ibv_device*, void (*)(ibv_device**)> list(ibv_get_device_list(&count), ibv_free_device_list);
  if (!list) return last_error();
  for (int i = 0; i < count; ++i) {
    ibv_device* d = list.get()[i];
    if (!name.empty() && name != ibv_get_device_name(d)) continue;
    context_ptr ctx(ibv_open_device(d));
    if (!ctx) {
      if (!name.empty()) return last_error();
      continue;
    }
    ibv_device_attr attr{};
    if (ibv_query_device(ctx.get(), &attr) != 0) return last_error();
    std::uint8_t chosen = 0;
    ibv_port_attr port_attr{};
    for (std::uint8_t p = 1; p <= attr.phys_port_cnt; ++p) {
      if (port != 0 && p != port) continue;
      ibv_port_attr pa{};
      if (ibv_query_port(ctx.get(), p, &pa) != 0) continue;
      if (pa.state != IBV_PORT_ACTIVE) continue;
      chosen = p;
      port_attr = pa;
      break;
    }
    if (chosen == 0) {
      if (!name.empty()) return std::make_error_code(std::errc::network_down);
      continue;
    }
    ibv_gid gid{};
    if (gid_index < 0 || gid_index >= port_attr.gid_tbl_len || ibv_query_gid(ctx.get(), chosen, gid_index, &gid) != 0)
      return std::make_error_code(std::errc::invalid_argument);
    pd_ptr pd(ibv_alloc_pd(ctx.get()));
    if (!pd) return last_error();
    out.name = ibv_get_device_name(d);
    out.port = chosen;
    out.gid_index = gid_index;
    std::copy(std::begin(gid.raw), std::end(gid.raw), out.gid.begin());
    out.mtu = port_attr.active_mtu;
    out.lid = port_attr.lid;
    out.max_mr_size = attr.max_mr_size;
    out.max_message = port_attr.max_msg_sz;
    out.max_qp_wr = attr.max_qp_wr;
    out.max_sge = attr.max_sge;
    out.initiator_depth = static_cast<std::uint8_t>(std::clamp(attr.max_qp_init_rd_atom, 1, 255));
    out.responder_resources = static_cast<std::uint8_t>(std::clamp(attr.max_qp_rd_atom, 1, 255));
    out.max_cqe = attr.max_cqe;
    out.context = std::move(ctx);
    out.pd = std::move(pd);
    return {};
  }
  return std::make_error_code(std::errc::no_such_device);
}

// ---------------------------------------------------------------- queue pairs
// A reliable-connected queue pair, created in RESET and moved to INIT.
inline qp_ptr make_rc_queue_pair(const device& dev, ibv_cq* cq, std::uint32_t send_depth, std::uint32_t max_sge,
                                 std::error_code& ec) {
  ibv_qp_init_attr init{};
  init.send_cq = cq;
  init.recv_cq = cq;
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = 0;  // selective signalling
  init.cap.max_send_wr = send_depth;
  init.cap.max_recv_wr = 1;
  init.cap.max_send_sge = max_sge;
  init.cap.max_recv_sge = 1;
  qp_ptr qp(ibv_create_qp(dev.pd.get(), &init));
  if (!qp) {
    ec = last_error();
    return qp;
  }
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_INIT;
  attr.pkey_index = 0;
  attr.port_num = dev.port;
  attr.qp_access_flags = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
  if (ibv_modify_qp(qp.get(), &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) != 0) {
    ec = last_error();
    qp.reset();
  }
  return qp;
}

// What one end tells the other, and what both agreed.
struct rc_peer {
  gid_bytes gid{};
  std::uint32_t qpn = 0;
  std::uint32_t psn = 0;
  ibv_mtu mtu = IBV_MTU_1024;
  std::uint16_t lid = 0;
  std::uint8_t reads_out = 1;  // RDMA reads this end may have outstanding: both ends' smaller limit
  std::uint8_t reads_in = 1;   // RDMA reads this end serves at once: the same agreed number
};

// INIT -> RTR -> RTS, connected to `remote`; `own_psn` is this end's first
// packet sequence number.
inline std::error_code connect_rc(const device& dev, ibv_qp* qp, const rc_peer& remote, std::uint32_t own_psn) {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_RTR;
  attr.path_mtu = remote.mtu;
  attr.dest_qp_num = remote.qpn;
  attr.rq_psn = remote.psn;
  attr.max_dest_rd_atomic = remote.reads_in;
  attr.min_rnr_timer = 12;
  attr.ah_attr.dlid = remote.lid;
  attr.ah_attr.is_global = 1;  // RoCE addresses by GID; on InfiniBand the GRH rides along
  std::copy(remote.gid.begin(), remote.gid.end(), std::begin(attr.ah_attr.grh.dgid.raw));
  attr.ah_attr.grh.sgid_index = static_cast<std::uint8_t>(dev.gid_index);
  attr.ah_attr.grh.hop_limit = 64;
  attr.ah_attr.port_num = dev.port;
  if (ibv_modify_qp(qp, &attr,
                    IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                        IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) != 0)
    return last_error();
  ibv_qp_attr rts{};
  rts.qp_state = IBV_QPS_RTS;
  rts.timeout = 14;   // 4.096 us * 2^14 = 67 ms per try
  rts.retry_cnt = 7;  // so a vanished peer fails a transfer within about half a second
  rts.rnr_retry = 7;
  rts.sq_psn = own_psn;
  rts.max_rd_atomic = remote.reads_out;
  if (ibv_modify_qp(qp, &rts,
                    IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                        IBV_QP_MAX_QP_RD_ATOMIC) != 0)
    return last_error();
  return {};
}

// Moves a queue pair to ERROR: everything it has outstanding completes
// (flushed), and nothing more touches memory through it.
inline std::error_code to_error(ibv_qp* qp) {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  return ibv_modify_qp(qp, &attr, IBV_QP_STATE) == 0 ? std::error_code{} : last_error();
}

inline std::uint32_t random_psn() {
  static thread_local std::minstd_rand gen(std::random_device{}());
  return static_cast<std::uint32_t>(gen()) & 0xffffff;
}

}  // namespace corokv::io::verbs
