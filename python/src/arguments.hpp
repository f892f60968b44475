#pragma once
// Arguments from Python, checked once, in one place, for the blocking,
// submitted and asyncio forms alike. A wrong type is a TypeError and a value
// that cannot be served a ValueError, each naming the argument (pybind11's
// own casters would answer "incompatible function arguments" or a
// RuntimeError "Unable to cast"). What only the store can judge (lists of
// different lengths, too many replicas) stays the store's corokv.Error, and
// a bad value or buffer of one key stays that key's status.

#include "operation.hpp"
#include "python_types.hpp"

#include <pybind11/pybind11.h>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace corokv::python {

inline std::string type_name(py::handle h) { return Py_TYPE(h.ptr())->tp_name; }

[[noreturn]] inline void wrong_type(const std::string& name, const char* expected, py::handle got) {
  throw py::type_error(name + " must be " + expected + ", not " + type_name(got));
}

// ------------------------------------------------------------ scalars
// An int (or an object with __index__, such as a numpy integer; not a
// bool) from `least` to `most`.
inline std::uint64_t int_arg(py::handle h, const std::string& name, std::uint64_t least = 0,
                             std::uint64_t most = std::numeric_limits<std::uint64_t>::max()) {
  if (PyBool_Check(h.ptr()) || !PyIndex_Check(h.ptr())) wrong_type(name, "an int", h);
  auto index = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
  if (!index) {
    // A numpy array has __index__, which refuses all but integer scalars.
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();  // its __index__ raised that
    PyErr_Clear();
    wrong_type(name, "an int", h);
  }
  int overflow = 0;
  const long long small = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (small == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow < 0 || (overflow == 0 && small < 0))
    throw py::value_error(name + (least == 0 ? std::string(" must not be negative") : " must be at least " + std::to_string(least)));
  std::uint64_t v = static_cast<std::uint64_t>(small);
  if (overflow > 0) {
    const unsigned long long big = PyLong_AsUnsignedLongLong(index.ptr());
    if (big == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
      PyErr_Clear();  // above 2**64 - 1
      throw py::value_error(name + " must be at most " + std::to_string(most));
    }
    v = big;
  }
  if (v < least) throw py::value_error(name + " must be at least " + std::to_string(least));
  if (v > most) throw py::value_error(name + " must be at most " + std::to_string(most));
  return v;
}

// True or False (also an int, or a numpy bool, as pybind11 took them).
inline bool bool_arg(py::handle h, const std::string& name) {
  PyObject* o = h.ptr();
  if (PyBool_Check(o)) return o == Py_True;
  const std::string type = type_name(h);
  if (PyLong_Check(o) || type == "numpy.bool_" || type == "numpy.bool") {
    const int truth = PyObject_IsTrue(o);
    if (truth < 0) throw py::error_already_set();
    return truth != 0;
  }
  wrong_type(name, "a bool", h);
}

// The longest time a store option may be: far past any sensible setting,
// far inside the nanosecond clock arithmetic of deadlines.
inline constexpr double max_seconds = 1e6;

// A number of seconds: an int or float, above 0 and at most max_seconds.
inline double seconds_arg(py::handle h, const std::string& name) {
  if (PyBool_Check(h.ptr()) || !PyNumber_Check(h.ptr()))
    wrong_type(name, "a number of seconds", h);
  const double s = PyFloat_AsDouble(h.ptr());
  if (s == -1.0 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
    PyErr_Clear();
    wrong_type(name, "a number of seconds", h);
  }
  if (!std::isfinite(s) || s <= 0 || s > max_seconds)
    throw py::value_error(name + " must be more than 0 and at most " + std::to_string(static_cast<long>(max_seconds)) +
                          " seconds, not " + std::to_string(s));
  return s;
}

// A str, as UTF-8.
inline std::string text_arg(py::handle h, const std::string& name) {
  if (!PyUnicode_Check(h.ptr())) wrong_type(name, "a str", h);
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(h.ptr(), &size);
  if (!data) {
    PyErr_Clear();
    throw py::value_error(name + " cannot be encoded as UTF-8");
  }
  return std::string(data, static_cast<std::size_t>(size));
}

// A list or tuple of str.
inline std::vector<std::string> text_list_arg(py::handle h, const std::string& name) {
  if (!PyList_Check(h.ptr()) && !PyTuple_Check(h.ptr())) wrong_type(name, "a list of str", h);
  py::sequence seq = py::reinterpret_borrow<py::sequence>(h);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < seq.size(); ++i) out.push_back(text_arg(seq[i], name + "[" + std::to_string(i) + "]"));
  return out;
}

// ------------------------------------------------------------ memory sizes
inline std::uint64_t page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }
inline std::uint64_t physical_memory() {
  return static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) * page_size();
}

// Bytes of this process's memory for the store: at least a page, at most
// the machine's memory (a segment is populated up front; one larger than
// the machine could only end in the OOM killer). 0 where `none_allowed`
// (no segment).
inline std::uint64_t memory_size_arg(py::handle h, const std::string& name, bool none_allowed) {
  const std::uint64_t size = int_arg(h, name);
  if (size == 0 && none_allowed) return 0;
  if (size < page_size())
    throw py::value_error(name + " must be at least a page (" + std::to_string(page_size()) + " bytes)" +
                          (none_allowed ? ", or 0 for none" : "") + ", not " + std::to_string(size));
  if (size > physical_memory())
    throw py::value_error(name + " of " + std::to_string(size) + " bytes is more than this machine's memory (" +
                          std::to_string(physical_memory()) + " bytes)");
  return size;
}

// ------------------------------------------------------------ sequences
// The items of a list or tuple (borrowed), or of any other iterable (a
// list made of it). `name` is the argument's, for the TypeError if it is
// not iterable.
class items {
 public:
  items(py::handle sequence, const char* name) {
    PyObject* o = sequence.ptr();
    if (PyList_Check(o) || PyTuple_Check(o)) {
      seq_ = py::reinterpret_borrow<py::object>(o);
      return;
    }
    auto iterator = py::reinterpret_steal<py::object>(PyObject_GetIter(o));
    if (!iterator) {
      if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
      PyErr_Clear();
      wrong_type(name, "a sequence (one item per key)", sequence);
    }
    seq_ = py::reinterpret_steal<py::object>(PySequence_List(iterator.ptr()));
    if (!seq_) throw py::error_already_set();
  }
  std::size_t size() const noexcept { return static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq_.ptr())); }
  PyObject* operator[](std::size_t i) const noexcept {
    return PySequence_Fast_GET_ITEM(seq_.ptr(), static_cast<Py_ssize_t>(i));
  }

 private:
  py::object seq_;
};

// A per-key argument: a sequence, but not one str, bytes or buffer (each of
// which is a sequence too, and would make a batch of its characters).
inline items per_key_arg(py::handle h, const char* name) {
  PyObject* o = h.ptr();
  if (PyUnicode_Check(o) || PyBytes_Check(o) || PyByteArray_Check(o) || PyMemoryView_Check(o))
    throw py::type_error(std::string(name) + " must be a list (one item per key), not a single " + type_name(h));
  return items(h, name);
}

// Keys are str (their UTF-8 bytes) or bytes; anything else is a TypeError.
// The operation keeps a reference to each key object and views its bytes.
inline void take_keys(py::handle keys, operation& op) {
  items k = per_key_arg(keys, "keys");
  op.keys.reserve(k.size());
  op.key_refs.reserve(k.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    PyObject* key = k[i];
    const char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyUnicode_Check(key)) {
      data = PyUnicode_AsUTF8AndSize(key, &size);  // cached in the str object
      if (!data) {
        PyErr_Clear();
        throw py::value_error("keys[" + std::to_string(i) + "] cannot be encoded as UTF-8");
      }
    } else if (PyBytes_Check(key)) {
      data = PyBytes_AS_STRING(key);
      size = PyBytes_GET_SIZE(key);
    } else {
      wrong_type("keys[" + std::to_string(i) + "]", "str or bytes", key);
    }
    op.key_refs.push_back(py::reinterpret_borrow<py::object>(key));
    op.keys.emplace_back(data, static_cast<std::size_t>(size));
  }
}

// A Python int from 0 to 2**64 - 1, or nothing (the Python error cleared).
inline std::optional<std::uint64_t> as_u64(PyObject* o) {
  if (!PyLong_Check(o)) return std::nullopt;
  const unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    return std::nullopt;
  }
  return v;
}

// The memory of one caller item: an object exporting a C-contiguous buffer
// of plain data (held for the operation), or, where allowed, an (address,
// size) pair inside a registered region. invalid_argument for anything else.
inline errc resolve_memory(PyObject* item, bool writable, bool allow_address, operation& op,
                           const region_table& regions, std::byte*& data, std::size_t& size) {
  if (PyTuple_Check(item)) {
    if (!allow_address || PyTuple_GET_SIZE(item) != 2) return errc::invalid_argument;
    const std::optional<std::uint64_t> address = as_u64(PyTuple_GET_ITEM(item, 0));
    const std::optional<std::uint64_t> length = as_u64(PyTuple_GET_ITEM(item, 1));
    if (!address || !length) return errc::invalid_argument;  // not integers, or negative: this key's bad input
    std::shared_ptr<held_buffer> pin;
    if (!regions.covers(*address, *length, pin)) return errc::invalid_argument;
    if (pin && (op.pins.empty() || op.pins.back() != pin)) op.pins.push_back(std::move(pin));
    data = reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(*address));
    size = static_cast<std::size_t>(*length);
    return errc::success;
  }
  held_buffer h;
  if (!h.acquire(item, writable)) return errc::invalid_argument;
  data = h.data();
  size = h.size();
  op.buffers.push_back(std::move(h));
  return errc::success;
}

// Query results handed back: QueryResult objects, or None where the caller
// has none (the key is then queried again, unless strict). QueryResult is
// final and made only by the binding, so its type object identifies it
// without pybind11's per-object type lookup (a hash of the C++ type name:
// most of the cost of a 64-key batch).
inline void take_query_results(py::handle results, operation& op) {
  items r = per_key_arg(results, "query_results");
  op.use_given = true;
  op.given.reserve(r.size());
  PyTypeObject* exact = types().query_result_type;
  for (std::size_t i = 0; i < r.size(); ++i) {
    PyObject* item = r[i];
    if (item == Py_None) {
      op.given.emplace_back();
      continue;
    }
    const void* value = nullptr;
    if (Py_TYPE(item) == exact) {
      const py::detail::value_and_holder v = reinterpret_cast<py::detail::instance*>(item)->get_value_and_holder();
      if (v.holder_constructed()) value = v.value_ptr();
    }
    if (!value) wrong_type("query_results[" + std::to_string(i) + "]", "a QueryResult from batch_query, or None", item);
    op.given.push_back(*static_cast<const query_result*>(value));
  }
}

}  // namespace corokv::python
