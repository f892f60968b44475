#pragma once
// No Python path to an uninitialised object.
//
// pybind11 allocates an instance in tp_new and builds its C++ object in
// __init__, so T.__new__(T) (or copy.copy, or pickle) gives an instance
// with no C++ object behind it, whose methods would run on a null pointer.
// Types only the store makes (QueryResult, Buffer, CompletionQueue) refuse
// tp_new outright: the binding makes their instances without it. The store
// classes are made by Python, so tp_new must work; every method of theirs
// checks instead (method<Self>), and also counts as an entry into the
// binding for the exit hook (lifetime.hpp).

#include "lifetime.hpp"

#include <pybind11/pybind11.h>

#include <string>
#include <utility>

namespace corokv::python {

namespace py = pybind11;

extern "C" inline PyObject* refuse_new(PyTypeObject* type, PyObject*, PyObject*) {
  PyErr_Format(PyExc_TypeError, "cannot create '%s' instances: the store makes them", type->tp_name);
  return nullptr;
}

// T.__new__ (and T()) raise TypeError; pybind11 still makes instances for
// the binding (it allocates them without tp_new).
inline void refuse_construction(py::handle cls) {
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  type->tp_new = refuse_new;
  PyType_Modified(type);
}

// The C++ object behind a bound method's self. TypeError if self is not a
// Self, or if __init__ never made its object: pybind11 would hand the
// method a pointer to freshly allocated, unconstructed memory then.
template <class Self>
Self& initialised(py::handle self) {
  static const py::detail::type_info* const type = py::detail::get_type_info(typeid(Self));
  if (!PyObject_TypeCheck(self.ptr(), type->type))
    throw py::type_error(std::string("this method needs a corokv.") + Self::python_name() + ", not " +
                         Py_TYPE(self.ptr())->tp_name);
  const py::detail::value_and_holder v =
      reinterpret_cast<py::detail::instance*>(self.ptr())->get_value_and_holder(type, /*throw_if_missing=*/false);
  if (!v.inst || !v.holder_constructed())
    throw py::type_error(std::string("this corokv.") + Self::python_name() +
                         " was never initialised (made by __new__ without __init__): make one by calling the class");
  return *v.template value_ptr<Self>();
}

namespace detail {
template <class Self, class F, class R, class... A>
auto checked(F f, R (F::*)(Self&, A...) const) {
  return [f = std::move(f)](py::handle self, A... a) -> R {
    call_scope scope;
    return f(initialised<Self>(self), std::forward<A>(a)...);
  };
}
}  // namespace detail

// A bound method of Self: `f` is a lambda taking Self& first, or a member
// function. pybind11 gets a function of the Python self, which checks it.
template <class Self, class F>
auto method(F f) {
  return detail::checked<Self>(std::move(f), &F::operator());
}
template <class Self, class R, class... A>
auto method(R (Self::*m)(A...)) {
  return [m](py::handle self, A... a) -> R {
    call_scope scope;
    return (initialised<Self>(self).*m)(std::forward<A>(a)...);
  };
}
template <class Self, class R, class... A>
auto method(R (Self::*m)(A...) const) {
  return [m](py::handle self, A... a) -> R {
    call_scope scope;
    return (initialised<Self>(self).*m)(std::forward<A>(a)...);
  };
}

}  // namespace corokv::python
