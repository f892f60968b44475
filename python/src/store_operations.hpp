#pragma once
// The store's batch operations as Python calls them, one entry each: from
// an entry follow the blocking call `name`, `submit_name` (a ticket; the
// completion lands in a queue) and `name_async` (corokv/__init__.py makes
// it from `_operations`, on submit_name).
//
// An entry has
//   name           the Python method
//   answer         what the store completes the operation with
//   arguments()    the Python arguments, with their defaults
//   build(op, regions, handles...)   takes and checks the arguments into the
//                  operation (per-key refusals included) before anything
//                  starts; a bad argument raises here, for every form alike
//   start(store, op, handler)        starts the store's operation
//   result(op, answer)               the Python result, index i answering
//                  key i (see per_key in outcome.hpp)
//
// Adding an operation: its entry here and in `store_operations` below.

#include "arguments.hpp"
#include "operation.hpp"
#include "outcome.hpp"
#include "python_types.hpp"

#include <corokv/client/options.hpp>
#include <corokv/types.hpp>

#include <pybind11/pybind11.h>

#include <cstdint>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

namespace corokv::python {

namespace detail {

// The keys, the values' memory (Python buffers, or (address, size) inside
// a registered region) and the replica count of a put.
inline void take_put(operation& op, const region_table& regions, py::handle keys, py::handle values,
                     py::handle replicas, const char* values_name) {
  take_keys(keys, op);
  op.put_opts.replicas = static_cast<std::size_t>(int_arg(replicas, "replicas", 1));
  items v = per_key_arg(values, values_name);
  if (v.size() != op.keys.size()) raise_error(errc::invalid_argument);
  op.values.reserve(v.size());
  op.buffers.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::byte* data = nullptr;
    std::size_t size = 0;
    const errc e = resolve_memory(v[i], /*writable=*/false, /*allow_address=*/true, op, regions, data, size);
    if (e != errc::success) op.refuse(i, e);
    op.values.emplace_back(data, size);
  }
}

// Query results handed back (QueryResult or None per key), if any, and
// whether a key without one may be queried again.
inline void take_get_options(operation& op, py::handle query_results, py::handle strict) {
  op.get_opts.strict = bool_arg(strict, "strict");
  if (!query_results.is_none()) take_query_results(query_results, op);
}

// The per-key statuses of a put, exist or remove.
inline py::object key_statuses(const operation& op, const std::vector<errc>& answer) {
  return per_key(op, [&](std::size_t j) { return status_object(answer[j]); }, [](errc e) { return status_object(e); });
}

}  // namespace detail

namespace ops {

struct batch_put {
  static constexpr const char* name = "batch_put";
  using answer = std::vector<errc>;
  static auto arguments() { return std::tuple{py::arg("keys"), py::arg("values"), py::arg("replicas") = 1}; }
  static void build(operation& op, const region_table& regions, py::handle keys, py::handle values,
                    py::handle replicas) {
    detail::take_put(op, regions, keys, values, replicas, "values");
  }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    store.batch_put(op.sent(), op.values, op.put_opts, std::forward<Handler>(h));
  }
  static py::object result(const operation& op, answer& a) { return detail::key_statuses(op, a); }
};

// batch_put, its values named as sources: (address, size) pairs in
// registered memory, or buffers.
struct batch_put_from : batch_put {
  static constexpr const char* name = "batch_put_from";
  static auto arguments() { return std::tuple{py::arg("keys"), py::arg("sources"), py::arg("replicas") = 1}; }
  static void build(operation& op, const region_table& regions, py::handle keys, py::handle sources,
                    py::handle replicas) {
    detail::take_put(op, regions, keys, sources, replicas, "sources");
  }
};

struct batch_exist {
  static constexpr const char* name = "batch_exist";
  using answer = std::vector<errc>;
  static auto arguments() { return std::tuple{py::arg("keys")}; }
  static void build(operation& op, const region_table&, py::handle keys) { take_keys(keys, op); }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    store.batch_exist(op.sent(), std::forward<Handler>(h));
  }
  static py::object result(const operation& op, answer& a) { return detail::key_statuses(op, a); }
};

struct batch_exist_prefix {
  static constexpr const char* name = "batch_exist_prefix";
  using answer = prefix_result;
  static auto arguments() { return std::tuple{py::arg("keys")}; }
  static void build(operation& op, const region_table&, py::handle keys) { take_keys(keys, op); }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    store.batch_exist_prefix(op.sent(), std::forward<Handler>(h));
  }
  static py::object result(const operation&, answer& a) {
    return make_struct(types().prefix_result, py::int_(a.matched), status_object(a.stopped_by));
  }
};

struct batch_query {
  static constexpr const char* name = "batch_query";
  using answer = std::vector<query_result>;
  static auto arguments() { return std::tuple{py::arg("keys")}; }
  static void build(operation& op, const region_table&, py::handle keys) { take_keys(keys, op); }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    store.batch_query(op.sent(), std::forward<Handler>(h));
  }
  static py::object result(const operation& op, answer& a) {
    return per_key(op, [&](std::size_t j) { return py::cast(a[j]); },
                   [](errc e) {
                     query_result r;
                     r.status = e;
                     return py::cast(r);
                   });
  }
};

// Reads into the caller's buffers (or (address, size) pairs in registered
// memory).
struct batch_get_into {
  static constexpr const char* name = "batch_get_into";
  using answer = std::vector<client::get_result>;
  static auto arguments() {
    return std::tuple{py::arg("keys"), py::arg("buffers"), py::arg("query_results") = py::none(),
                      py::arg("strict") = false};
  }
  static void build(operation& op, const region_table& regions, py::handle keys, py::handle buffers,
                    py::handle query_results, py::handle strict) {
    take_keys(keys, op);
    detail::take_get_options(op, query_results, strict);
    items b = per_key_arg(buffers, "buffers");
    if (b.size() != op.keys.size() || (op.use_given && op.given.size() != op.keys.size()))
      raise_error(errc::invalid_argument);
    op.destinations.reserve(b.size());
    op.buffers.reserve(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
      std::byte* data = nullptr;
      std::size_t size = 0;
      const errc e = resolve_memory(b[i], /*writable=*/true, /*allow_address=*/true, op, regions, data, size);
      if (e != errc::success) op.refuse(i, e);
      op.destinations.emplace_back(data, size);
    }
  }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    if (op.use_given)
      store.batch_get(op.sent(), std::span<const query_result>(op.given), op.destinations, op.get_opts,
                      std::forward<Handler>(h));
    else
      store.batch_get(op.sent(), op.destinations, op.get_opts, std::forward<Handler>(h));
  }
  static py::object result(const operation& op, answer& a) {
    return per_key(
        op,
        [&](std::size_t j) {
          const client::get_result& g = a[j];
          return make_struct(types().get_result, status_object(g.status), py::int_(g.size), py::int_(g.version),
                             source_object(g.source));
        },
        [](errc e) {
          return make_struct(types().get_result, status_object(e), py::int_(0), py::int_(0),
                             source_object(client::key_source::none));
        });
  }
};

// Reads into buffers the store owns, handed out as memoryviews.
struct batch_get {
  static constexpr const char* name = "batch_get";
  using answer = std::vector<client::get_buffer_result>;
  static auto arguments() {
    return std::tuple{py::arg("keys"), py::arg("query_results") = py::none(), py::arg("strict") = false};
  }
  static void build(operation& op, const region_table&, py::handle keys, py::handle query_results,
                    py::handle strict) {
    take_keys(keys, op);
    detail::take_get_options(op, query_results, strict);
    if (op.use_given && op.given.size() != op.keys.size()) raise_error(errc::invalid_argument);
  }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    if (op.use_given)
      store.batch_get(op.sent(), std::span<const query_result>(op.given), op.get_opts, std::forward<Handler>(h));
    else
      store.batch_get(op.sent(), op.get_opts, std::forward<Handler>(h));
  }
  static py::object result(const operation& op, answer& a) {
    return per_key(
        op,
        [&](std::size_t j) {
          client::get_buffer_result& g = a[j];
          py::object data = py::none();
          if (g.ok()) {
            py::object buffer = py::cast(owned_buffer(std::move(g.buffer)));
            data = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(buffer.ptr()));
            if (!data) throw py::error_already_set();
          }
          return make_struct(types().buffer_result, status_object(g.status), std::move(data), py::int_(g.version),
                             source_object(g.source));
        },
        [](errc e) {
          return make_struct(types().buffer_result, status_object(e), py::none(), py::int_(0),
                             source_object(client::key_source::none));
        });
  }
};

struct batch_remove {
  static constexpr const char* name = "batch_remove";
  using answer = std::vector<errc>;
  static auto arguments() { return std::tuple{py::arg("keys")}; }
  static void build(operation& op, const region_table&, py::handle keys) { take_keys(keys, op); }
  template <class Store, class Handler>
  static void start(Store& store, operation& op, Handler&& h) {
    store.batch_remove(op.sent(), std::forward<Handler>(h));
  }
  static py::object result(const operation& op, answer& a) { return detail::key_statuses(op, a); }
};

// Hides every object; answers how many.
struct remove_all {
  static constexpr const char* name = "remove_all";
  using answer = std::uint64_t;
  static auto arguments() { return std::tuple{}; }
  static void build(operation&, const region_table&) {}
  template <class Store, class Handler>
  static void start(Store& store, operation&, Handler&& h) {
    store.remove_all(std::forward<Handler>(h));
  }
  static py::object result(const operation&, answer& a) { return py::int_(a); }
};

}  // namespace ops

using store_operations = std::tuple<ops::batch_put, ops::batch_put_from, ops::batch_exist, ops::batch_exist_prefix,
                                    ops::batch_query, ops::batch_get_into, ops::batch_get, ops::batch_remove,
                                    ops::remove_all>;

// An operation of entry Op: the arguments (operation) and the store's answer.
template <class Op>
struct typed_operation final : operation {
  typename Op::answer answer{};
  typed_operation() {
    python_result = [](operation& self) { return Op::result(self, static_cast<typed_operation&>(self).answer); };
  }
};

// The names of every entry, for corokv/__init__.py's _async variants.
inline py::tuple store_operation_names() {
  return std::apply([](auto... op) { return py::make_tuple(py::str(decltype(op)::name)...); }, store_operations{});
}

}  // namespace corokv::python
