// The corokv._corokv extension module: the vocabulary (Status, Error, the
// result tuples, QueryResult, Buffer, CompletionQueue) here; the store
// classes in embedded_binding.cpp and cluster_binding.cpp.

#include "arguments.hpp"
#include "construction.hpp"
#include "lifetime.hpp"
#include "operation.hpp"
#include "outcome.hpp"
#include "python_types.hpp"

#include <corokv/error.hpp>

#include <pybind11/eval.h>
#include <pybind11/pybind11.h>

#include <cctype>
#include <chrono>
#include <climits>
#include <string>
#include <string_view>

namespace corokv::python {

void bind_embedded_store(py::module_& m);
void bind_cluster_store(py::module_& m);

python_types& types() {
  static python_types* t = new python_types;  // never destroyed: Python objects outlive static destruction
  return *t;
}

exit_coordinator& exit_guard() {
  static exit_coordinator* g = new exit_coordinator;  // never destroyed: frozen daemon threads outlive static destruction
  return *g;
}

py::object error_object(const std::error_code& ec, const char* message) {
  py::object code = ec == condition::per_key ? status_object(as_per_key_status(ec)) : py::object(py::int_(ec.value()));
  return types().error_type(code, py::str(message ? std::string(message) : ec.message()),
                            py::str(ec.category().name()));
}

namespace {

// A table name as Python spells enum members and constants: in capitals.
py::str capitals(std::string_view name) {
  std::string s(name);
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return py::str(s);
}

// No __init__: Error(code, message, category) runs no Python code, so the
// binding can make one at any point of a call (lifetime.hpp); its fields
// are its arguments.
constexpr const char* error_class = R"py(
class Error(Exception):
    """A whole operation failed: Error(code, message, category="corokv").
    `code` is a Status for corokv's own codes (else the error's number),
    `message` says what failed, `category` is the error category's name."""

    code = property(lambda self: self.args[0] if self.args else None)
    message = property(lambda self: self.args[1] if len(self.args) > 1 else "")
    category = property(lambda self: self.args[2] if len(self.args) > 2 else "corokv")

    def __str__(self):
        return f"{self.message} ({self.code!r})"
)py";

PyTypeObject* struct_type(py::module_& m, const char* qualified, const char* doc,
                          std::initializer_list<std::pair<const char*, const char*>> fields) {
  // The descriptor must outlive the type: static storage per call site.
  auto* members = new PyStructSequence_Field[fields.size() + 1];
  std::size_t i = 0;
  for (auto& [name, field_doc] : fields) members[i++] = {name, field_doc};
  members[i] = {nullptr, nullptr};
  auto* desc = new PyStructSequence_Desc{qualified, doc, members, static_cast<int>(fields.size())};
  PyTypeObject* type = PyStructSequence_NewType(desc);
  if (!type) throw py::error_already_set();
  const std::string_view name(qualified);
  m.attr(std::string(name.substr(name.rfind('.') + 1)).c_str()) = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(type));
  return type;
}

double seconds_left(const query_result& r) {
  return std::chrono::duration<double>(r.lease_deadline - clock_type::now()).count();
}

}  // namespace

}  // namespace corokv::python

PYBIND11_MODULE(_corokv, m) {
  using namespace corokv;
  using namespace corokv::python;
  m.doc() = "corokv: batched KV-cache store (native part; use the corokv package)";

  // Status: an IntEnum made from corokv's error table (error.hpp), which
  // the module exports as well: error_table holds (code, name, message,
  // kind, Mooncake code) per code, mooncake_codes Mooncake's names.
  py::list members;
  py::list table;
  for (const error_entry& e : error_table) {
    members.append(py::make_tuple(capitals(e.name), py::int_(static_cast<int>(e.code))));
    table.append(py::make_tuple(static_cast<int>(e.code), py::str(std::string(e.name)), py::str(std::string(e.message)),
                                py::str(std::string(name_of(e.kind))), static_cast<int>(e.mooncake)));
  }
  py::object enum_module = py::module_::import("enum");
  py::object status = enum_module.attr("IntEnum")("Status", members, py::arg("module") = "corokv");
  m.attr("Status") = status;
  m.attr("error_table") = py::tuple(table);
  py::dict mooncake;
  for (const mooncake_entry& c : mooncake_table) mooncake[capitals(c.name)] = static_cast<int>(c.code);
  m.attr("mooncake_codes") = mooncake;
  auto& t = types();
  for (const error_entry& e : error_table) t.statuses.push_back(status(py::int_(static_cast<int>(e.code))));
  for (const char* name : {"none", "caller", "cache", "requery"})  // client::key_source order
    t.sources.push_back(py::reinterpret_steal<py::object>(PyUnicode_InternFromString(name)));
  m.def(
      "status_message",
      [](py::handle code) {
        if (PyBool_Check(code.ptr()) || !PyLong_Check(code.ptr())) wrong_type("status", "a Status or an int", code);
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(code.ptr(), &overflow);
        const bool fits = overflow == 0 && v >= INT_MIN && v <= INT_MAX;
        return make_error_code(static_cast<errc>(fits ? static_cast<int>(v) : -1)).message();
      },
      py::arg("status"), "What a Status means, in words.");

  py::dict scope;
  scope["__name__"] = "corokv";
  py::exec(error_class, scope);
  t.error_type = scope["Error"];
  m.attr("Error") = t.error_type;

  t.get_result = struct_type(m, "corokv.GetResult", "batch_get_into's answer for one key",
                             {{"status", "Status"}, {"size", "bytes written into the key's buffer"},
                              {"version", "the object's version"}, {"source", "caller, cache, requery or none"}});
  t.buffer_result = struct_type(m, "corokv.BufferResult", "batch_get's answer for one key",
                                {{"status", "Status"}, {"data", "memoryview over the store-owned bytes, or None"},
                                 {"version", "the object's version"}, {"source", "caller, cache, requery or none"}});
  t.prefix_result = struct_type(m, "corokv.PrefixResult", "batch_exist_prefix's answer",
                                {{"matched", "leading keys that exist"}, {"stopped_by", "Status that ended the match"}});
  t.completion = struct_type(m, "corokv.Completion", "a submitted operation's outcome",
                             {{"ticket", "what submit_* returned"}, {"result", "the result, or None"},
                              {"error", "a corokv.Error, or None"}});

  // The types below are made only by the binding: final, and T() or
  // T.__new__(T) raise TypeError (construction.hpp).
  py::class_<query_result>(m, "QueryResult", py::is_final(),
                           "A key's metadata and lease, to hand back to batch_get_into / batch_get")
      .def_property_readonly("status", [](const query_result& r) { return status_object(r.status); })
      .def_property_readonly("ok", &query_result::ok)
      .def_readonly("size", &query_result::size)
      .def_readonly("version", &query_result::version)
      .def_property_readonly("replicas", [](const query_result& r) { return r.replicas.size(); })
      .def_property_readonly("lease_seconds_left", &seconds_left,
                             "Seconds the client still trusts the lease (negative: expired)")
      .def("__repr__", [](const query_result& r) {
        return "QueryResult(status=" + py::repr(status_object(r.status)).cast<std::string>() +
               ", size=" + std::to_string(r.size) + ", version=" + std::to_string(r.version) + ")";
      });

  t.query_result_type = reinterpret_cast<PyTypeObject*>(m.attr("QueryResult").ptr());
  refuse_construction(m.attr("QueryResult"));

  py::class_<owned_buffer>(m, "Buffer", py::buffer_protocol(), py::is_final(),
                           "Store-owned bytes; memoryview(buffer) reads them in place")
      .def_buffer([](owned_buffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.size())}, {1});
      })
      .def("ptr", &owned_buffer::address, "The bytes' address")
      .def("size", &owned_buffer::size)
      .def("__len__", &owned_buffer::size);
  refuse_construction(m.attr("Buffer"));

  py::class_<completion_queue, std::shared_ptr<completion_queue>>(
      m, "CompletionQueue", py::is_final(), "Completions of submitted operations; fileno() is readable while some wait")
      .def("fileno", &completion_queue::fd)
      .def("drain", [](completion_queue& q) { return drain_queue(q); });
  refuse_construction(m.attr("CompletionQueue"));

  bind_embedded_store(m);
  bind_cluster_store(m);

  // Stores close themselves at interpreter exit (lifetime.hpp). Registered
  // now, so it runs after the exit hooks of whatever imports corokv later.
  py::module_::import("atexit").attr("register")(py::cpp_function([] { exit_guard().at_exit(); }));
}
