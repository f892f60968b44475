#pragma once
// What a finished operation answers in Python: lists aligned with the keys
// (refused keys carry the binding's reason), or the corokv.Error of a whole
// failure; and the draining of a completion queue.

#include "operation.hpp"
#include "python_types.hpp"

#include <pybind11/pybind11.h>

#include <utility>

namespace corokv::python {

// Index i answers key i: refused keys with their reason, the others with
// the store's answers in order.
template <class FromStore, class FromRefusal>
py::list per_key(const operation& op, FromStore from_store, FromRefusal from_refusal) {
  py::list out(op.keys.size());
  std::size_t j = 0;
  for (std::size_t i = 0; i < op.keys.size(); ++i) {
    py::object item = !op.refused.empty() && op.refused[i] != errc::success ? from_refusal(op.refused[i]) : from_store(j++);
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), item.release().ptr());
  }
  return out;
}

// The operation's Python result, or the corokv.Error it failed with.
inline std::pair<py::object, py::object> outcome(operation& op) {
  if (op.ec) return {py::none(), error_object(op.ec)};
  auto status = [](errc e) { return status_object(e); };
  switch (op.kind) {
    case op_kind::put:
    case op_kind::exist:
    case op_kind::remove:
      return {per_key(op, [&](std::size_t j) { return status_object(op.statuses[j]); }, status), py::none()};
    case op_kind::exist_prefix:
      return {make_struct(types().prefix_result, py::int_(op.prefix.matched), status_object(op.prefix.stopped_by)),
              py::none()};
    case op_kind::query:
      return {per_key(op, [&](std::size_t j) { return py::cast(op.queried[j]); },
                      [](errc e) {
                        query_result r;
                        r.status = e;
                        return py::cast(r);
                      }),
              py::none()};
    case op_kind::get_into:
      return {per_key(
                  op,
                  [&](std::size_t j) {
                    const get_result& g = op.got[j];
                    return make_struct(types().get_result, status_object(g.status), py::int_(g.size),
                                       py::int_(g.version), source_object(g.source));
                  },
                  [](errc e) {
                    return make_struct(types().get_result, status_object(e), py::int_(0), py::int_(0),
                                       source_object(key_source::none));
                  }),
              py::none()};
    case op_kind::get_owned:
      return {per_key(
                  op,
                  [&](std::size_t j) {
                    get_buffer_result& g = op.owned[j];
                    py::object data = py::none();
                    if (g.ok()) {
                      py::object buffer = py::cast(owned_buffer(std::move(g.buffer)));
                      data = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(buffer.ptr()));
                      if (!data) throw py::error_already_set();
                    }
                    return make_struct(types().buffer_result, status_object(g.status), std::move(data),
                                       py::int_(g.version), source_object(g.source));
                  },
                  [](errc e) {
                    return make_struct(types().buffer_result, status_object(e), py::none(), py::int_(0),
                                       source_object(key_source::none));
                  }),
              py::none()};
    case op_kind::remove_all:
      return {py::int_(op.count), py::none()};
  }
  return {py::none(), py::none()};
}

// Every completion waiting in `q`, as Completion tuples. The operations
// (and the buffers they held) are dropped here, with the GIL. The GIL is
// kept while the queue is taken: its lock is only ever held briefly, by
// threads that never wait for the GIL.
inline py::list drain_queue(completion_queue& q) {
  std::vector<std::shared_ptr<operation>> ready = q.take();
  py::list out;
  for (auto& op : ready) {
    auto [result, error] = outcome(*op);
    out.append(make_struct(types().completion, py::int_(op->ticket), std::move(result), std::move(error)));
  }
  return out;
}


}  // namespace corokv::python
