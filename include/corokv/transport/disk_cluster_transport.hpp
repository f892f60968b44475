#pragma once
// The transport of a cluster node with a disk tier: the cluster transport's
// lanes and the disk lane (io_uring). Per replica: memcpy in this process
// or from a same-host peer's mapped memory, the disk lane for this node's
// own disk segments, else the owner's data server over TCP, which reads
// its disk segments through its own disk lane (net::range_reader). Needs
// liburing (corokv::uring).

#include <corokv/transport/cluster_transport.hpp>
#include <corokv/transport/data_transport.hpp>
#include <corokv/transport/disk_lane.hpp>
#include <corokv/transport/lane_router.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <utility>

namespace corokv {

using disk_cluster_transport = lane_router<memcpy_lane, disk_lane, tcp_lane>;

static_assert(data_transport<disk_cluster_transport>);

namespace detail {
// This node's data server reads remote readers' ranges of its disk
// segments through the disk lane.
inline void serve_disk_segments(const tcp_lane& tcp, const disk_lane& disk) {
  if (auto server = tcp.data_server()) server->set_range_reader(disk.range_reader());
}
}  // namespace detail

// Throws as the lanes do: boost::system::system_error for a bad listen or
// advertise address, std::system_error when io_uring is unavailable.
inline disk_cluster_transport make_disk_cluster_transport(boost::asio::any_io_executor ex, segment_lister list_segments,
                                                          cluster_transport_options options = {},
                                                          disk_lane_options disk = {}) {
  auto parts = detail::make_cluster_parts(ex, std::move(list_segments), std::move(options));
  disk_lane lane(std::move(ex), disk);
  detail::serve_disk_segments(parts.tcp, lane);
  return disk_cluster_transport(std::move(parts.routing), std::move(parts.memcpy), std::move(lane),
                                std::move(parts.tcp));
}

}  // namespace corokv
