// corokv.Store: the embedded store (metadata service, segments and data in
// this process; bytes move by memcpy).

#include "store_binding.hpp"

#include <corokv/embedded.hpp>

namespace corokv::python {

void bind_embedded_store(py::module_& m) {
  using self_t = py_store<store>;
  py::class_<self_t> cls(m, "Store", "The embedded store: metadata, memory and data in this process");
  cls.def(py::init([](std::uint64_t segment_size, double lease_ttl, std::size_t cache_capacity,
                      std::uint64_t buffer_pool_size, bool populate) {
            const store_options o = python_store_options(lease_ttl, cache_capacity, buffer_pool_size, populate);
            return new self_t([o](asio::any_io_executor ex) { return new store(ex, o); }, segment_size);
          }),
          py::arg("segment_size") = std::uint64_t{256} << 20, py::arg("lease_ttl") = 5.0,
          py::arg("cache_capacity") = std::size_t{1} << 16, py::arg("buffer_pool_size") = std::uint64_t{64} << 20,
          py::arg("populate") = true);
  bind_store_methods<store>(cls);
}

}  // namespace corokv::python
