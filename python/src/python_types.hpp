#pragma once
// The Python-side vocabulary the bindings share: the Status IntEnum (one
// member per row of corokv's errors table, error.hpp), the corokv.Error exception, the result tuples
// (C struct sequences: a tuple with named fields, made without running
// Python code) and the Buffer over a store-owned handle. Made once, when
// the module is imported (module.cpp).

#include <corokv/client/options.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/buffer_pool.hpp>
#include <corokv/types.hpp>

#include <pybind11/pybind11.h>

#include <system_error>
#include <vector>

namespace corokv::python {

namespace py = pybind11;

struct python_types {
  std::vector<py::object> statuses;  // Status members, indexed by errc
  std::vector<py::object> sources;   // "none", "caller", "cache", "requery", indexed by client::key_source
  py::object error_type;             // corokv.Error
  PyTypeObject* query_result_type = nullptr;  // QueryResult, for the fast path back in
  PyTypeObject* get_result = nullptr;
  PyTypeObject* buffer_result = nullptr;
  PyTypeObject* prefix_result = nullptr;
  PyTypeObject* completion = nullptr;
};

// Defined in module.cpp; valid once the module is initialised.
python_types& types();

inline py::object status_object(errc e) { return types().statuses.at(static_cast<std::size_t>(e)); }

// A corokv.Error for a whole operation's failure: `code` is a Status for
// corokv's own codes, else the error's number; `category` names its
// category; the message is the code's, unless given.
py::object error_object(const std::error_code& ec, const char* message = nullptr);

[[noreturn]] inline void raise_error(const std::error_code& ec, const char* message = nullptr) {
  py::object e = error_object(ec, message);
  PyErr_SetObject(types().error_type.ptr(), e.ptr());
  throw py::error_already_set();
}

// A new instance of a struct sequence type, its fields set from `items`.
template <class... Items>
py::object make_struct(PyTypeObject* type, Items&&... items) {
  PyObject* s = PyStructSequence_New(type);
  if (!s) throw py::error_already_set();
  Py_ssize_t i = 0;
  (PyStructSequence_SetItem(s, i++, py::object(std::forward<Items>(items)).release().ptr()), ...);
  return py::reinterpret_steal<py::object>(s);
}

// Where a read found its metadata, as an interned str (made once).
inline py::object source_object(client::key_source s) {
  return types().sources.at(static_cast<std::size_t>(s));
}

// Bytes the store owns (a memory::buffer_handle from its pool), exported through
// the buffer protocol: memoryview(buffer) reads them in place. The memory
// returns to the pool when the Buffer and every view of it are gone (a
// view holds the Buffer); there is no early release, which could leave a
// view pointing at memory the pool reuses.
class owned_buffer {
 public:
  explicit owned_buffer(memory::buffer_handle h) : handle_(std::move(h)) {}
  std::byte* data() const noexcept { return handle_.data(); }
  std::size_t size() const noexcept { return handle_.size(); }
  std::uintptr_t address() const noexcept { return reinterpret_cast<std::uintptr_t>(handle_.data()); }

 private:
  memory::buffer_handle handle_;
};

}  // namespace corokv::python
