"""Hostile calls against the corokv package, for test_hostile.py.

Every public function and method is called with each of its arguments
replaced in turn by each hostile value (the others valid); besides, every
public method of an uninitialised object, of a closed store, and the ways
to make the types Python must not make. The calls are cases with a stable
id; a child process (``python hostile.py``, ids on stdin) runs a list of
them and prints, per case, a START line before and a DONE line (the outcome
as JSON) after, so that the parent knows which case was running if the
child dies.

An outcome is "returned" or the class of the exception raised: TypeError,
ValueError, Error (corokv.Error), Hostile (raised by a hostile object
itself, passed through), or any other name (a failure). For the batch
operations one case runs the blocking, the submitted and the asyncio form
with the same arguments; all three must agree.
"""

import asyncio
import copy
import copyreg
import json
import math
import os
import pickle
import select
import sys

import numpy as np

import corokv
from corokv import Status
from corokv.mooncake import MooncakeDistributedStore


class Hostile(Exception):
    """Raised by the hostile objects' own methods."""


class RaisingIndex:
    def __index__(self):
        raise Hostile("__index__")


class RaisingFloat:
    def __float__(self):
        raise Hostile("__float__")


class RaisingBool:
    def __bool__(self):
        raise Hostile("__bool__")


class RaisingIterable:
    def __iter__(self):
        raise Hostile("__iter__")


class LyingSequence:
    """Says it has items, fails to give them."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        raise Hostile("__getitem__")


def _readonly():
    a = np.zeros(64, np.uint8)
    a.flags.writeable = False
    return a


def _generator():
    yield "from-a-generator"


# name -> factory(ctx): a fresh object per call (generators are used up).
HOSTILE = {
    "None": lambda c: None,
    "True": lambda c: True,
    "0": lambda c: 0,
    "-1": lambda c: -1,
    "4095": lambda c: 4095,
    "2**63": lambda c: 2**63,
    "2**64": lambda c: 2**64,
    "2**70": lambda c: 2**70,
    "-2**70": lambda c: -(2**70),
    "1.5": lambda c: 1.5,
    "nan": lambda c: math.nan,
    "inf": lambda c: math.inf,
    "complex": lambda c: 1j,
    "empty str": lambda c: "",
    "str": lambda c: "abc",
    "surrogate str": lambda c: "\udcff",
    "bytes": lambda c: b"abc",
    "empty bytes": lambda c: b"",
    "bytearray": lambda c: bytearray(8),
    "memoryview": lambda c: memoryview(bytearray(8)),
    "empty list": lambda c: [],
    "[None]": lambda c: [None],
    "[1]": lambda c: [1],
    "[-1]": lambda c: [-1],
    "[2**70]": lambda c: [2**70],
    "[1.5]": lambda c: [1.5],
    "[str]": lambda c: ["k"],
    "[surrogate str]": lambda c: ["\udcff"],
    "[empty str]": lambda c: [""],
    "[long key]": lambda c: ["x" * 5000],
    "duplicate keys": lambda c: ["d", "d"],
    "[bytes]": lambda c: [b"x"],
    "[[1]]": lambda c: [[1]],
    "[object array]": lambda c: [np.array([1, "x"], dtype=object)],
    "[struct array with an object field]": lambda c: [np.zeros(4, dtype=[("n", "i8"), ("o", "O")])],
    "[float64 array]": lambda c: [np.zeros(8, np.float64)],
    "[strided array]": lambda c: [np.zeros((4, 8), np.uint8)[:, ::2]],
    "[read-only array]": lambda c: [_readonly()],
    "[(unregistered address, size)]": lambda c: [(12345, 10)],
    "[(2**70, 1)]": lambda c: [(2**70, 1)],
    "[(-1, 1)]": lambda c: [(-1, 1)],
    "[(1, 2, 3)]": lambda c: [(1, 2, 3)],
    "[()]": lambda c: [()],
    "[QueryResult]": lambda c: [c.query_result()],
    "[Buffer]": lambda c: [c.buffer()],
    "[store]": lambda c: [c.store],
    "object array": lambda c: np.array([b"a", 1], dtype=object),
    "2-d array": lambda c: np.zeros((2, 8), np.uint8),
    "0-d array": lambda c: np.array(5, np.uint8),
    "numpy int": lambda c: np.int64(3),
    "numpy bool": lambda c: np.bool_(True),
    "numpy float": lambda c: np.float64(0.5),
    "dict": lambda c: {"a": 1},
    "set": lambda c: {"a"},
    "object": lambda c: object(),
    "type": lambda c: int,
    "generator": lambda c: _generator(),
    "raising __iter__": lambda c: RaisingIterable(),
    "lying sequence": lambda c: LyingSequence(),
    "raising __index__": lambda c: RaisingIndex(),
    "raising __float__": lambda c: RaisingFloat(),
    "raising __bool__": lambda c: RaisingBool(),
    "QueryResult": lambda c: c.query_result(),
    "Buffer": lambda c: c.buffer(),
    "CompletionQueue": lambda c: c.store._new_queue(),
    "another store's queue": lambda c: c.other_store()._new_queue(),
    "the store": lambda c: c.store,
}


class Context:
    """The objects a group of cases works on, made when first needed."""

    def __init__(self, cluster_master=None):
        self.cluster_master = cluster_master
        self._store = None
        self._other = None
        self._loop = None
        self._mc = None
        self._mc_buffer = None
        self._counter = 0

    def new_store(self):
        if self.cluster_master:
            return corokv.ClusterStore(self.cluster_master, segment_size=8 << 20, request_timeout=2.0,
                                       heartbeat_interval=0.2, buffer_pool_size=4 << 20)
        return corokv.Store(segment_size=8 << 20, buffer_pool_size=4 << 20)

    @property
    def store(self):
        if self._store is None or self._store.closed:
            self._store = self.new_store()
        return self._store

    def other_store(self):
        if self._other is None:
            self._other = corokv.Store(segment_size=0, buffer_pool_size=0)
        return self._other

    @property
    def loop(self):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def key(self):
        """A key no other context uses (a cluster's stores share keys)."""
        self._counter += 1
        return f"key-{os.getpid()}-{id(self)}-{self._counter}"

    def query_result(self):
        k = self.key()
        put = self.store.batch_put([k], [b"q" * 64])
        assert put == [Status.SUCCESS], put
        return self.store.batch_query([k])[0]

    def buffer(self):
        k = self.key()
        put = self.store.batch_put([k], [b"b" * 64])
        assert put == [Status.SUCCESS], put
        got = self.store.batch_get([k])[0]
        assert got.status == Status.SUCCESS, got
        return got.data.obj

    def mooncake(self):
        """A MooncakeDistributedStore on an embedded store, with a
        registered buffer (mc_address)."""
        if self._mc is None:
            self._mc = MooncakeDistributedStore()
            assert self._mc.setup("127.0.0.1", "P2PHANDSHAKE", 8 << 20, 4 << 20, "tcp", "", "embedded") == 0
            self._mc_buffer = np.zeros(1 << 16, np.uint8)
            assert self._mc.register_buffer(self._mc_buffer.ctypes.data, self._mc_buffer.nbytes) == 0
        return self._mc

    def mc_address(self):
        self.mooncake()
        return self._mc_buffer.ctypes.data

    def close(self):
        if self._mc is not None:
            self._mc.close()
        for s in (self._store, self._other):
            if s is not None:
                s.close()
        if self._loop is not None:
            self._loop.close()


# ------------------------------------------------------------ what to call
# The batch operations: (name, [(argument, valid value factory)]). Each has
# a blocking form, submit_<name> (one more argument: queue) and <name>_async.
OPERATIONS = {
    "batch_put": [("keys", lambda c: [c.key()]), ("values", lambda c: [b"value"]), ("replicas", lambda c: 1)],
    "batch_put_from": [("keys", lambda c: [c.key()]), ("sources", lambda c: [b"value"]), ("replicas", lambda c: 1)],
    "batch_exist": [("keys", lambda c: ["k"])],
    "batch_exist_prefix": [("keys", lambda c: ["k"])],
    "batch_query": [("keys", lambda c: ["k"])],
    "batch_get_into": [("keys", lambda c: ["k"]), ("buffers", lambda c: [bytearray(64)]),
                       ("query_results", lambda c: None), ("strict", lambda c: False)],
    "batch_get": [("keys", lambda c: ["k"]), ("query_results", lambda c: None), ("strict", lambda c: False)],
    "batch_remove": [("keys", lambda c: ["k"])],
    "remove_all": [],
}

# The store's other methods with arguments.
METHODS = {
    "add_segment": [("size", lambda c: 1 << 20)],
    "register_buffer": [("buffer", lambda c: bytearray(4096)), ("size", lambda c: None)],
    "unregister_buffer": [("buffer", lambda c: bytearray(16))],
    "cancel": [("ticket", lambda c: 1)],
}

# Read, not called, on uninitialised and closed stores.
PROPERTIES = ["closed", "node", "registered_buffers", "master_connected"]


# Module functions and constructors: (callable, [(argument, valid value factory)]).
def _store_constructor(c, **kw):
    s = corokv.Store(**kw)
    s.close()
    return None


def _cluster_constructor(c, master, **kw):
    s = corokv.ClusterStore(master, **kw)
    s.close()
    return None


FUNCTIONS = {
    "corokv.status_message": (lambda c, status: corokv.status_message(status), [("status", lambda c: Status.NOT_FOUND)]),
    "corokv.parse_address": (lambda c, address: corokv.parse_address(address), [("address", lambda c: "h:1")]),
    "corokv.Store": (_store_constructor, [
        ("segment_size", lambda c: 1 << 20), ("lease_ttl", lambda c: 5.0), ("cache_capacity", lambda c: 1024),
        ("buffer_pool_size", lambda c: 1 << 20), ("populate", lambda c: True)]),
    "corokv.ClusterStore": (_cluster_constructor, [
        ("master", lambda c: "127.0.0.1:1"), ("segment_size", lambda c: 0), ("data_host", lambda c: "127.0.0.1"),
        ("data_port", lambda c: 0), ("advertise_host", lambda c: ""), ("shared_memory", lambda c: False),
        ("lanes", lambda c: []), ("request_timeout", lambda c: 0.3), ("heartbeat_interval", lambda c: 0.2),
        ("lease_ttl", lambda c: 5.0), ("cache_capacity", lambda c: 1024), ("buffer_pool_size", lambda c: 1 << 20),
        ("populate", lambda c: True), ("node", lambda c: 0)]),
}

# The Mooncake-compatible surface, on an embedded store.
MOONCAKE = {
    "setup": [("local_hostname", lambda c: "127.0.0.1"), ("metadata_server", lambda c: "P2PHANDSHAKE"),
              ("global_segment_size", lambda c: 1 << 20), ("local_buffer_size", lambda c: 1 << 20),
              ("protocol", lambda c: "tcp"), ("rdma_devices", lambda c: ""),
              ("master_server_addr", lambda c: "embedded")],
    "register_buffer": [("buffer_ptr", lambda c: c.mc_address()), ("size", lambda c: 4096)],
    "unregister_buffer": [("buffer_ptr", lambda c: c.mc_address())],
    "batch_put_from": [("keys", lambda c: [c.key()]), ("buffer_ptrs", lambda c: [c.mc_address()]),
                       ("sizes", lambda c: [64]), ("config", lambda c: None)],
    "put_from": [("key", lambda c: c.key()), ("buffer_ptr", lambda c: c.mc_address()), ("size", lambda c: 64),
                 ("config", lambda c: None)],
    "batch_put_from_multi_buffers": [("keys", lambda c: [c.key()]), ("all_buffer_ptrs", lambda c: [[c.mc_address()]]),
                                     ("all_sizes", lambda c: [[64]]), ("config", lambda c: None)],
    "put": [("key", lambda c: c.key()), ("value", lambda c: b"v" * 64), ("config", lambda c: None)],
    "put_batch": [("keys", lambda c: [c.key()]), ("values", lambda c: [b"v" * 64]), ("config", lambda c: None)],
    "batch_get_into": [("keys", lambda c: ["k"]), ("buffer_ptrs", lambda c: [c.mc_address()]), ("sizes", lambda c: [64])],
    "get_into": [("key", lambda c: "k"), ("buffer_ptr", lambda c: c.mc_address()), ("size", lambda c: 64)],
    "batch_get_into_multi_buffers": [("keys", lambda c: ["k"]), ("all_buffer_ptrs", lambda c: [[c.mc_address()]]),
                                     ("all_sizes", lambda c: [[64]])],
    "get": [("key", lambda c: "k")],
    "get_batch": [("keys", lambda c: ["k"])],
    "get_buffer": [("key", lambda c: "k")],
    "batch_get_buffer": [("keys", lambda c: ["k"])],
    "get_size": [("key", lambda c: "k")],
    "batch_is_exist": [("keys", lambda c: ["k"])],
    "is_exist": [("key", lambda c: "k")],
    "remove": [("key", lambda c: "k"), ("force", lambda c: False)],
    "batch_remove": [("keys", lambda c: ["k"]), ("force", lambda c: False)],
    "remove_all": [("force", lambda c: False)],
}

# Names a TypeError or ValueError about an argument may use for it.
ALIASES = {"buffer": ("buffer", "address"), "master": ("master",), "lanes": ("lanes", "lane")}

STORE_CLASSES = {
    "Store": corokv.Store, "ClusterStore": corokv.ClusterStore,
    "_corokv.Store": corokv._corokv.Store, "_corokv.ClusterStore": corokv._corokv.ClusterStore,
}
MADE_BY_THE_BINDING = {"QueryResult": corokv.QueryResult, "Buffer": corokv.Buffer,
                       "CompletionQueue": corokv.CompletionQueue}


def public_names(cls):
    return sorted(n for n in dir(cls) if not n.startswith("_") or n in ("__enter__", "__exit__"))


# ------------------------------------------------------------ the cases
class Case:
    """id: stable name; group: cases that share a Context (and a child);
    expect: the outcomes allowed (None: any of the ordinary ones); slot:
    the argument made hostile (its name must be in a TypeError's or
    ValueError's message); forms: the operation runs in three forms."""

    def __init__(self, id, group, run, expect=None, slot=None, forms=False, mooncake=False):
        self.id, self.group, self.run, self.expect, self.slot, self.forms, self.mooncake = (
            id, group, run, expect, slot, forms, mooncake)


def _arguments(c, slots, hostile_slot=None, hostile=None):
    return {name: (HOSTILE[hostile](c) if name == hostile_slot else make(c)) for name, make in slots}


def _operation_case(name, slots, slot, hostile, group):
    def run(c):
        return run_forms(c, name, slots, slot, hostile)
    return Case(f"{group}:{name}({slot}={hostile})", group, run, slot=slot, forms=True)


def _queue_case(name, slots, hostile, group):
    def run(c):
        kwargs = _arguments(c, slots)
        queue = kwargs["queue"] = HOSTILE[hostile](c)
        ticket = getattr(c.store, "submit_" + name)(**kwargs)
        if isinstance(queue, corokv.CompletionQueue):
            return wait_submitted(ticket, queue.fileno(), queue.drain)
        return wait_submitted(ticket, c.store.event_fd(), c.store.drain_completions)
    expect = {"returned"} if hostile in ("None", "CompletionQueue") else {"TypeError", "ValueError"}
    return Case(f"{group}:submit_{name}(queue={hostile})", group, run, expect=expect, slot="queue")


def _method_case(name, slots, slot, hostile, group):
    def run(c):
        return getattr(c.store, name)(**_arguments(c, slots, slot, hostile))
    return Case(f"{group}:{name}({slot}={hostile})", group, run, slot=slot)


def _function_case(name, call, slots, slot, hostile):
    def run(c):
        return call(c, **_arguments(c, slots, slot, hostile))
    return Case(f"functions:{name}({slot}={hostile})", "functions", run, slot=slot)


def _mooncake_case(name, slots, slot, hostile):
    def run(c):
        mc = c.mooncake()
        if name == "setup":
            mc = MooncakeDistributedStore()
            try:
                return mc.setup(**_arguments(c, slots, slot, hostile))
            finally:
                mc.close()
        return getattr(mc, name)(**_arguments(c, slots, slot, hostile))
    return Case(f"mooncake:{name}({slot}={hostile})", "mooncake", run, slot=slot, mooncake=True)


def _valid_call(c, obj, name):
    """Calls obj.name with valid arguments (or reads it, a property)."""
    attr = getattr(obj, name)
    if name in PROPERTIES:
        return attr
    if name.endswith("_async"):
        base = name[: -len("_async")]
        return c.loop.run_until_complete(attr(**_arguments(c, OPERATIONS[base])))
    if name.startswith("submit_"):
        return attr(**_arguments(c, OPERATIONS[name[len("submit_"):]]))
    if name in OPERATIONS:
        return attr(**_arguments(c, OPERATIONS[name]))
    if name in METHODS:
        return attr(**_arguments(c, METHODS[name]))
    if name == "__exit__":
        return attr(None, None, None)
    return attr()


def _uninitialised_case(cls_name, name):
    def run(c):
        cls = STORE_CLASSES[cls_name]
        return _valid_call(c, cls.__new__(cls), name)
    return Case(f"uninitialised:{cls_name}.{name}", "uninitialised", run, expect={"TypeError"})


CLOSED_ANSWER = {"close", "closed", "registered_buffers", "operations_in_flight", "cancel", "__enter__", "__exit__"}


def _closed_case(name):
    def run(c):
        s = c.new_store()
        s.close()
        return _valid_call(c, s, name)
    expect = {"returned"} if name in CLOSED_ANSWER else {"ValueError"}
    return Case(f"closed:Store.{name}", "closed", run, expect=expect)


def _refusal_cases():
    cases = []
    for name, cls in MADE_BY_THE_BINDING.items():
        def made(c, cls=cls):
            return {"QueryResult": c.query_result, "Buffer": c.buffer,
                    "CompletionQueue": lambda: c.store._new_queue()}[cls.__name__]()
        ways = {
            "T()": lambda c, cls=cls: cls(),
            "T.__new__(T)": lambda c, cls=cls: cls.__new__(cls),
            "object.__new__(T)": lambda c, cls=cls: object.__new__(cls),
            "copyreg.__newobj__(T)": lambda c, cls=cls: copyreg.__newobj__(cls),
            "subclass": lambda c, cls=cls: type("Sub", (cls,), {}),
            "copy.copy": lambda c, made=made: copy.copy(made(c)),
            "pickle": lambda c, made=made: pickle.loads(pickle.dumps(made(c))),
        }
        for way, run in ways.items():
            cases.append(Case(f"construction:{name}:{way}", "construction", run, expect={"TypeError"}))
    # A second __init__ is ignored; an unbound method on something else refused.
    def second_init(c):
        s = corokv._corokv.Store(segment_size=0, buffer_pool_size=0)
        s.__init__(segment_size=0)
        ok = s.batch_exist(["a"]) == [Status.NOT_FOUND]
        s.close()
        return ok
    cases.append(Case("construction:Store.__init__ twice", "construction", second_init, expect={"returned"}))
    cases.append(Case("construction:Store.__new__ then __init__", "construction",
                      lambda c: _init_later(), expect={"returned"}))
    for name, args in (("close", ()), ("batch_put", (["k"], [b"v"])), ("counters", ())):
        cases.append(Case(f"construction:_corokv.Store.{name}(a QueryResult)", "construction",
                          lambda c, name=name, args=args: getattr(corokv._corokv.Store, name)(c.query_result(), *args),
                          expect={"TypeError"}))
    return cases


def _init_later():
    s = corokv.Store.__new__(corokv.Store)
    s.__init__(segment_size=0, buffer_pool_size=0)
    ok = s.batch_exist(["a"]) == [Status.NOT_FOUND]
    s.close()
    return ok


def all_cases(cluster=False):
    """Every case, in a stable order. `cluster`: the store cases run on a
    ClusterStore (group "cluster-..."), against the master the child gets."""
    cases = []
    prefix = "cluster-" if cluster else ""
    for name, slots in OPERATIONS.items():
        group = f"{prefix}op-{name}"
        for slot, _ in slots:
            for hostile in HOSTILE:
                cases.append(_operation_case(name, slots, slot, hostile, group))
        for hostile in HOSTILE:
            cases.append(_queue_case(name, slots, hostile, group))
    for name, slots in METHODS.items():
        for slot, _ in slots:
            for hostile in HOSTILE:
                cases.append(_method_case(name, slots, slot, hostile, f"{prefix}methods"))
    if cluster:
        return cases
    for name, (call, slots) in FUNCTIONS.items():
        for slot, _ in slots:
            for hostile in HOSTILE:
                cases.append(_function_case(name, call, slots, slot, hostile))
    for name, slots in MOONCAKE.items():
        for slot, _ in slots:
            for hostile in HOSTILE:
                cases.append(_mooncake_case(name, slots, slot, hostile))
    for cls_name, cls in STORE_CLASSES.items():
        for name in public_names(cls):
            cases.append(_uninitialised_case(cls_name, name))
    for name in public_names(corokv.Store):
        cases.append(_closed_case(name))
    cases.extend(_refusal_cases())
    return cases


# ------------------------------------------------------------ running
def classify(e):
    if isinstance(e, Hostile):
        return "Hostile"
    if isinstance(e, corokv.Error):
        return "Error"
    if isinstance(e, TypeError):
        return "TypeError"
    if isinstance(e, ValueError):
        return "ValueError"
    return type(e).__name__


def outcome_of(call):
    try:
        value = call()
    except Exception as e:  # classified: the parent judges it
        return {"kind": classify(e), "message": str(e)[:300]}
    return {"kind": "returned", "value": describe(value)}


def describe(value):
    """A JSON-able picture of a result: ints, strs and None as they are,
    lists item by item, anything else by its type name."""
    if value is None or isinstance(value, (bool, int, str)):
        return int(value) if isinstance(value, Status) else value
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    if isinstance(value, tuple) and hasattr(value, "status"):  # GetResult, BufferResult
        return {"status": int(value.status)}
    if isinstance(value, list):
        return [describe(v) for v in value[:50]]
    return {"type": type(value).__name__}


def wait_submitted(ticket, fd, drain, timeout=20.0):
    """The submitted operation's result, or its error raised."""
    while True:
        for done in drain():
            if done.ticket == ticket:
                if done.error is not None:
                    raise done.error
                return done.result
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError(f"ticket {ticket} did not complete")


def run_forms(c, name, slots, slot, hostile):
    """The operation in its three forms, each with fresh arguments; their
    outcomes."""
    store = c.store
    out = {}
    out["blocking"] = outcome_of(lambda: getattr(store, name)(**_arguments(c, slots, slot, hostile)))
    out["submit"] = outcome_of(lambda: wait_submitted(
        getattr(store, "submit_" + name)(**_arguments(c, slots, slot, hostile)), store.event_fd(),
        store.drain_completions))
    out["async"] = outcome_of(lambda: c.loop.run_until_complete(
        asyncio.wait_for(getattr(store, name + "_async")(**_arguments(c, slots, slot, hostile)), 20)))
    return out


def child_main():
    ids = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    master = os.environ.get("COROKV_HOSTILE_MASTER")
    by_id = {c.id: c for c in all_cases(cluster=bool(master))}
    contexts = {}
    out = sys.stdout
    for case_id in ids:
        case = by_id[case_id]
        c = contexts.get(case.group)
        if c is None:
            c = contexts[case.group] = Context(master)
        out.write("START " + case_id + "\n")
        out.flush()
        if case.forms:
            result = {"forms": case.run(c)}
        else:
            result = outcome_of(lambda: case.run(c))
        out.write("DONE " + json.dumps({"id": case_id, "outcome": result}) + "\n")
        out.flush()
    for c in contexts.values():
        c.close()


if __name__ == "__main__":
    child_main()
