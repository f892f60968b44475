// corokv.ClusterStore: one node of a cluster (metadata from a corokv-master;
// data by memcpy, shared memory and TCP; a data server for this node's
// segments).

#include "store_binding.hpp"

#include <corokv/cluster.hpp>

namespace corokv::python {

void bind_cluster_store(py::module_& m) {
  using self_t = py_store<cluster_store>;
  py::class_<self_t> cls(m, "ClusterStore", "A node of a corokv cluster");
  cls.def(py::init([](std::string master_host, std::uint16_t master_port, std::uint64_t segment_size,
                      std::string data_host, std::uint16_t data_port, std::string advertise_host, bool shared_memory,
                      std::vector<std::string> lanes, double request_timeout, double heartbeat_interval,
                      double lease_ttl, std::size_t cache_capacity, std::uint64_t buffer_pool_size, bool populate,
                      std::uint64_t node) {
            cluster_options o;
            o.master.host = std::move(master_host);
            o.master.port = master_port;
            o.master.request_timeout = seconds(request_timeout);
            o.master.heartbeat_interval = seconds(heartbeat_interval);
            o.transport.data_listen = {asio::ip::make_address(data_host), data_port};
            o.transport.advertise_host = advertise_host.empty() ? data_host : advertise_host;
            o.transport.shared_memory = shared_memory;
            o.transport.lanes = std::move(lanes);
            o.store = python_store_options(lease_ttl, cache_capacity, buffer_pool_size, populate);
            o.store.node = node;
            return new self_t(
                [o](asio::any_io_executor ex) { return new cluster_store(make_cluster_store(ex, o)); },
                segment_size);
          }),
          py::arg("master_host"), py::arg("master_port"), py::arg("segment_size") = 0,
          py::arg("data_host") = "127.0.0.1", py::arg("data_port") = 0, py::arg("advertise_host") = "",
          py::arg("shared_memory") = true, py::arg("lanes") = std::vector<std::string>{},
          py::arg("request_timeout") = 5.0, py::arg("heartbeat_interval") = 1.0, py::arg("lease_ttl") = 5.0,
          py::arg("cache_capacity") = std::size_t{1} << 16, py::arg("buffer_pool_size") = std::uint64_t{64} << 20,
          py::arg("populate") = true, py::arg("node") = 0);
  cls.def_property_readonly("master_connected",
                            [](self_t& s) { return s.with_store([](cluster_store& kv) { return kv.metadata().ready(); }); });
  bind_store_methods<cluster_store>(cls);
}

}  // namespace corokv::python
