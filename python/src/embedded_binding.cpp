// corokv.Store: the embedded store (metadata service, segments and data in
// this process; bytes move by memcpy).

#include "store_binding.hpp"

#include <corokv/embedded.hpp>

namespace corokv::python {

template <>
struct store_class<store> {
  static constexpr const char* name = "Store";
};

void bind_embedded_store(py::module_& m) {
  using self_t = py_store<store>;
  py::class_<self_t> cls(m, "Store", "The embedded store: metadata, memory and data in this process");
  cls.def(py::init([](py::handle segment_size, py::handle lease_ttl, py::handle cache_capacity,
                      py::handle buffer_pool_size, py::handle populate) {
            const std::uint64_t segment = memory_size_arg(segment_size, "segment_size", /*none_allowed=*/true);
            const client::store_options o = python_store_options(lease_ttl, cache_capacity, buffer_pool_size, populate);
            return new self_t([o](boost::asio::any_io_executor ex) { return new store(ex, o); }, segment);
          }),
          py::arg("segment_size") = py::int_(std::uint64_t{256} << 20), py::arg("lease_ttl") = py::float_(5.0),
          py::arg("cache_capacity") = py::int_(std::size_t{1} << 16),
          py::arg("buffer_pool_size") = py::int_(std::uint64_t{64} << 20), py::arg("populate") = py::bool_(true));
  bind_store_methods<store>(cls);
}

}  // namespace corokv::python
