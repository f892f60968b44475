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
  return {op.python_result(op), py::none()};
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
