// corokv.ClusterStore: one node of a cluster (metadata from a corokv-master;
// data by memcpy, shared memory and TCP; a data server for this node's
// segments).

#include "store_binding.hpp"

#include <corokv/cluster.hpp>

namespace corokv::python {

template <>
struct store_class<cluster_store> {
  static constexpr const char* name = "ClusterStore";
};

namespace {

boost::asio::ip::address ip_address_arg(py::handle h, const char* name) {
  const std::string text = text_arg(h, name);
  boost::system::error_code ec;
  const boost::asio::ip::address a = boost::asio::ip::make_address(text, ec);
  if (ec) throw py::value_error(std::string(name) + " must be an IPv4 or IPv6 address, not '" + text + "'");
  return a;
}

}  // namespace

void bind_cluster_store(py::module_& m) {
  using self_t = py_store<cluster_store>;
  py::class_<self_t> cls(m, "ClusterStore", "A node of a corokv cluster");
  cls.def(py::init([](py::handle master_host, py::handle master_port, py::handle segment_size, py::handle data_host,
                      py::handle data_port, py::handle advertise_host, py::handle shared_memory, py::handle lanes,
                      py::handle request_timeout, py::handle heartbeat_interval, py::handle lease_ttl,
                      py::handle cache_capacity, py::handle buffer_pool_size, py::handle populate, py::handle node) {
            cluster_options o;
            o.master.host = text_arg(master_host, "master_host");
            o.master.port = static_cast<std::uint16_t>(int_arg(master_port, "master_port", 1, 65535));
            const std::uint64_t segment = memory_size_arg(segment_size, "segment_size", /*none_allowed=*/true);
            const std::string data = text_arg(data_host, "data_host");
            o.transport.data_listen = {ip_address_arg(data_host, "data_host"),
                                       static_cast<std::uint16_t>(int_arg(data_port, "data_port", 0, 65535))};
            const std::string advertise = text_arg(advertise_host, "advertise_host");
            o.transport.advertise_host = advertise.empty() ? data : advertise;
            o.transport.shared_memory = bool_arg(shared_memory, "shared_memory");
            o.transport.lanes = text_list_arg(lanes, "lanes");
            o.master.request_timeout = seconds(seconds_arg(request_timeout, "request_timeout"));
            o.master.heartbeat_interval = seconds(seconds_arg(heartbeat_interval, "heartbeat_interval"));
            o.store = python_store_options(lease_ttl, cache_capacity, buffer_pool_size, populate);
            o.store.node = int_arg(node, "node");
            return new self_t([o](boost::asio::any_io_executor ex) { return new cluster_store(make_cluster_store(ex, o)); },
                              segment);
          }),
          py::arg("master_host"), py::arg("master_port"), py::arg("segment_size") = py::int_(0),
          py::arg("data_host") = py::str("127.0.0.1"), py::arg("data_port") = py::int_(0),
          py::arg("advertise_host") = py::str(""), py::arg("shared_memory") = py::bool_(true),
          py::arg("lanes") = py::list(), py::arg("request_timeout") = py::float_(5.0),
          py::arg("heartbeat_interval") = py::float_(1.0), py::arg("lease_ttl") = py::float_(5.0),
          py::arg("cache_capacity") = py::int_(std::size_t{1} << 16),
          py::arg("buffer_pool_size") = py::int_(std::uint64_t{64} << 20), py::arg("populate") = py::bool_(true),
          py::arg("node") = py::int_(0));
  cls.def_property_readonly("master_connected", method<self_t>([](self_t& s) {
                              return s.with_store([](cluster_store& kv) { return kv.metadata().ready(); });
                            }));
  bind_store_methods<cluster_store>(cls);
}

}  // namespace corokv::python
