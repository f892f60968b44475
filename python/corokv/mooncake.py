"""A Mooncake Store compatible surface over corokv.

An engine integrated with Mooncake Store switches by changing its import:

    from corokv.mooncake import MooncakeDistributedStore, ReplicateConfig

The calls SGLang's and LMCache's Mooncake backends make are here, with
Mooncake's return conventions: 0 or a negative code for puts and removes,
bytes read or a negative code for reads into caller memory, 1 / 0 / -1 for
existence, empty bytes for a failed ``get``, None for a failed
``get_buffer``. Negative codes are Mooncake's published numbers
(``MOONCAKE_CODES``, from corokv's error table; docs/reference/errors.md
has the table).

What a Mooncake setup names that corokv has no use for (the transfer
engine's metadata server, RDMA device names, SSD offload, soft pins,
preferred segments) is accepted and ignored; ``protocol="rdma"`` is refused
(-600): this package speaks memcpy, shared memory and TCP.
"""

import ctypes
import logging
import operator
import re

from . import ClusterStore, Error, Status, Store, _corokv

__all__ = ["MooncakeDistributedStore", "ReplicateConfig", "MOONCAKE_CODES", "mooncake_code"]

log = logging.getLogger("corokv.mooncake")

# corokv Status -> Mooncake ErrorCode (mooncake-store/include/types.h): both
# come from corokv's error table (include/corokv/error.hpp), through the
# binding. The codes this module answers by itself:
OK = _corokv.mooncake_codes["OK"]
INTERNAL_ERROR = _corokv.mooncake_codes["INTERNAL_ERROR"]
INVALID_PARAMS = _corokv.mooncake_codes["INVALID_PARAMS"]

MOONCAKE_CODES = {Status(code): mooncake for code, _name, _message, _kind, mooncake in _corokv.error_table}


def mooncake_code(status_or_error):
    """The Mooncake code of a Status, or of a corokv.Error (-1 for errors
    that are not corokv's own)."""
    if isinstance(status_or_error, Error):
        status_or_error = status_or_error.code
    if isinstance(status_or_error, Status):
        return MOONCAKE_CODES[status_or_error]
    return INTERNAL_ERROR


class ReplicateConfig:
    """Mooncake's put options. ``replica_num`` is honoured (copies on
    distinct segments, 1..4); the placement hints are accepted and ignored."""

    def __init__(self, replica_num=1):
        self.replica_num = replica_num
        self.with_soft_pin = False
        self.with_hard_pin = False
        self.soft_pin_action = 0
        self.soft_pin_ttl_ms = None
        self.preferred_segment = ""
        self.preferred_segments = []
        self.prefer_alloc_in_same_node = False

    def __repr__(self):
        return f"ReplicateConfig(replica_num={self.replica_num})"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(value):
    """An int, or a string such as '16MB', '4gb', '3355443200'."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r}")
    unit = (m.group(2) or "").lower()[:1]
    size = float(m.group(1)) * _UNITS[unit]
    if size != size or size in (float("inf"), float("-inf")):
        raise ValueError(f"not a size: {value!r}")
    return int(size)


def _index(value):
    """An int argument (a pointer, a size, a count), as Mooncake's binding
    takes one: TypeError for a float, a str or None."""
    return operator.index(value)


def _replicas(config):
    return 1 if config is None else _index(getattr(config, "replica_num", 1) or 1)


class MooncakeDistributedStore:
    """corokv behind Mooncake's MooncakeDistributedStore interface.

    ``setup(..., master_server_addr="HOST:PORT")`` joins the corokv cluster
    whose corokv-master listens there, contributing ``global_segment_size``
    bytes; ``master_server_addr="embedded"`` makes an embedded store in
    this process instead.
    """

    def __init__(self):
        self._store = None
        self._hostname = ""

    # ---------------------------------------------------------------- setup
    def setup(self, local_hostname, metadata_server=None, global_segment_size=16 << 20,
              local_buffer_size=16 << 20, protocol="tcp", rdma_devices="",
              master_server_addr="127.0.0.1:50051", engine=None, **ignored):
        """Positional form (Mooncake's order), or setup(config_dict).
        Returns 0, or a negative code."""
        if isinstance(local_hostname, dict):
            return self._setup_from_dict(local_hostname)
        if self._store is not None:
            return INVALID_PARAMS
        if str(protocol).lower() not in ("tcp", ""):
            log.error("corokv.mooncake: protocol %r is not available in this package (tcp only)", protocol)
            return INVALID_PARAMS
        try:
            segment = _size(global_segment_size)
            pool = _size(local_buffer_size)
            host = str(local_hostname)
            if master_server_addr in ("embedded", "local"):
                self._store = Store(segment_size=segment, buffer_pool_size=pool)
            else:
                advertise, _, port = host.partition(":")
                self._store = ClusterStore(
                    master_server_addr,
                    segment_size=segment,
                    buffer_pool_size=pool,
                    data_host="0.0.0.0",
                    data_port=int(port) if port.isdigit() else 0,
                    advertise_host=advertise or "127.0.0.1",
                )
        except Error as e:
            return mooncake_code(e)
        except (ValueError, TypeError, RuntimeError, OSError) as e:
            log.error("corokv.mooncake: setup failed: %s", e)
            return INVALID_PARAMS
        self._hostname = host
        return OK

    def _setup_from_dict(self, config):
        if "local_hostname" not in config or "metadata_server" not in config:
            return INVALID_PARAMS
        return self.setup(
            config["local_hostname"],
            config["metadata_server"],
            config.get("global_segment_size", 16 << 20),
            config.get("local_buffer_size", 16 << 20),
            config.get("protocol", "tcp"),
            config.get("rdma_devices", ""),
            config.get("master_server_addr", "127.0.0.1:50051"),
        )

    def init_all(self, protocol, device_name, mount_segment_size):
        return self.setup("localhost", "", mount_segment_size, 16 << 20, protocol, device_name, "127.0.0.1:50051")

    def get_hostname(self):
        return self._hostname

    def health_check(self):
        return 0 if self._store is not None and not self._store.closed else 1

    def close(self):
        if self._store is not None:
            self._store.close()
            self._store = None
        return OK

    # ---------------------------------------------------------------- memory
    def register_buffer(self, buffer_ptr, size):
        return self._call_code(lambda s: s.register_buffer(_index(buffer_ptr), _index(size)))

    def unregister_buffer(self, buffer_ptr):
        return self._call_code(lambda s: s.unregister_buffer(_index(buffer_ptr)))

    # ---------------------------------------------------------------- puts
    def batch_put_from(self, keys, buffer_ptrs, sizes, config=None):
        if not (len(keys) == len(buffer_ptrs) == len(sizes)):
            return [INVALID_PARAMS] * len(keys)
        sources = [(_index(p), _index(n)) for p, n in zip(buffer_ptrs, sizes)]
        return self._per_key(keys, lambda s: s.batch_put_from(keys, sources, _replicas(config)),
                             lambda st: MOONCAKE_CODES[st])

    def put_from(self, key, buffer_ptr, size, config=None):
        return self.batch_put_from([key], [buffer_ptr], [size], config)[0]

    def batch_put_from_multi_buffers(self, keys, all_buffer_ptrs, all_sizes, config=None):
        """Each key's object is its parts, concatenated (staged through one
        copy: corokv takes one contiguous value per key)."""
        if not (len(keys) == len(all_buffer_ptrs) == len(all_sizes)):
            return [INVALID_PARAMS] * len(keys)
        if self._store is None:
            return [INVALID_PARAMS] * len(keys)
        values = []
        for ptrs, sizes in zip(all_buffer_ptrs, all_sizes):
            parts = self._registered_parts(ptrs, sizes)
            if parts is None:
                return [INVALID_PARAMS] * len(keys)
            staged = bytearray(sum(n for _, n in parts))
            base = ctypes.addressof((ctypes.c_char * len(staged)).from_buffer(staged)) if staged else 0
            at = 0
            for p, n in parts:
                ctypes.memmove(base + at, p, n)
                at += n
            values.append(staged)
        return self._per_key(keys, lambda s: s.batch_put(keys, values, _replicas(config)),
                             lambda st: MOONCAKE_CODES[st])

    def put(self, key, value, config=None):
        return self.put_batch([key], [value], config)

    def put_batch(self, keys, values, config=None):
        """One code for the whole batch: 0, or the first key's failure."""
        if len(keys) != len(values):
            return INVALID_PARAMS
        codes = self._per_key(keys, lambda s: s.batch_put(keys, values, _replicas(config)),
                              lambda st: MOONCAKE_CODES[st])
        return next((c for c in codes if c != OK), OK)

    # ---------------------------------------------------------------- gets
    def batch_get_into(self, keys, buffer_ptrs, sizes):
        if not (len(keys) == len(buffer_ptrs) == len(sizes)):
            return [INVALID_PARAMS] * len(keys)
        targets = [(_index(p), _index(n)) for p, n in zip(buffer_ptrs, sizes)]
        return self._per_key(keys, lambda s: s.batch_get_into(keys, targets),
                             lambda r: r.size if r.status == Status.SUCCESS else MOONCAKE_CODES[r.status])

    def get_into(self, key, buffer_ptr, size):
        return self.batch_get_into([key], [buffer_ptr], [size])[0]

    def batch_get_into_multi_buffers(self, keys, all_buffer_ptrs, all_sizes, prefer_alloc_in_same_node=False):
        """Scatters each object over its parts in order; bytes read, or a
        code (-600 if the parts are too small for the object)."""
        if not (len(keys) == len(all_buffer_ptrs) == len(all_sizes)):
            return [INVALID_PARAMS] * len(keys)
        got = self._per_key(keys, lambda s: s.batch_get(keys), lambda r: r)
        out = []
        for item, ptrs, sizes in zip(got, all_buffer_ptrs, all_sizes):
            if isinstance(item, int):
                out.append(item)
                continue
            if item.status != Status.SUCCESS:
                out.append(MOONCAKE_CODES[item.status])
                continue
            data = item.data
            total = len(data)
            parts = self._registered_parts(ptrs, sizes)
            if parts is None or sum(n for _, n in parts) < total:
                out.append(INVALID_PARAMS)
                continue
            source = data.obj.ptr()
            at = 0
            for p, n in parts:
                step = min(n, total - at)
                if step > 0:
                    ctypes.memmove(p, source + at, step)
                    at += step
            out.append(total)
        return out

    def get(self, key):
        return self.get_batch([key])[0]

    def get_batch(self, keys):
        """The values as bytes (copied out of the store); b"" for a key that
        failed."""
        results = self._per_key(keys, lambda s: s.batch_get(keys), lambda r: r)
        return [b"" if isinstance(r, int) or r.status != Status.SUCCESS else bytes(r.data) for r in results]

    def get_buffer(self, key):
        return self.batch_get_buffer([key])[0]

    def batch_get_buffer(self, keys):
        """Store-owned buffers (ptr(), size(), the buffer protocol), no copy;
        None for a key that failed."""
        results = self._per_key(keys, lambda s: s.batch_get(keys), lambda r: r)
        return [None if isinstance(r, int) or r.status != Status.SUCCESS else r.data.obj for r in results]

    def get_size(self, key):
        r = self._per_key([key], lambda s: s.batch_query([key]), lambda q: q)[0]
        if isinstance(r, int):
            return r
        return r.size if r.status == Status.SUCCESS else MOONCAKE_CODES[r.status]

    # ---------------------------------------------------------------- existence
    def batch_is_exist(self, keys):
        """1 exists, 0 missing, -1 error, per key."""
        def code(st):
            if st == Status.SUCCESS:
                return 1
            return 0 if st == Status.NOT_FOUND else -1
        return self._per_key(keys, lambda s: s.batch_exist(keys), code, failed=-1)

    is_batch_exist = batch_is_exist

    def is_exist(self, key):
        return self.batch_is_exist([key])[0]

    # ---------------------------------------------------------------- removal
    def remove(self, key, force=False):
        return self.batch_remove([key], force)[0]

    def batch_remove(self, keys, force=False):
        return self._per_key(keys, lambda s: s.batch_remove(keys), lambda st: MOONCAKE_CODES[st])

    def remove_all(self, force=False):
        """How many objects were removed, or a code."""
        if self._store is None:
            return INVALID_PARAMS
        try:
            return self._store.remove_all()
        except Error as e:
            return mooncake_code(e)

    # ---------------------------------------------------------------- helpers
    def _registered_parts(self, ptrs, sizes):
        """[(ptr, size)] as ints, if every part lies in memory registered
        here (only then are raw pointers touched; each is converted once,
        so what is checked is what is used); else None."""
        try:
            if len(ptrs) != len(sizes):
                return None
            parts = [(_index(p), _index(n)) for p, n in zip(ptrs, sizes)]
            if all(self._store._covers(p, n) for p, n in parts):
                return parts
        except (TypeError, ValueError):
            pass
        return None

    def _call_code(self, call):
        if self._store is None:
            return INVALID_PARAMS
        try:
            call(self._store)
        except Error as e:
            return mooncake_code(e)
        except (TypeError, ValueError):
            return INVALID_PARAMS
        return OK

    def _per_key(self, keys, call, convert, failed=None):
        """call(store) answers per key; each answer converted. A whole
        failure becomes its code (or `failed`) for every key."""
        if self._store is None:
            return [INVALID_PARAMS if failed is None else failed] * len(keys)
        try:
            results = call(self._store)
        except Error as e:
            return [mooncake_code(e) if failed is None else failed] * len(keys)
        except (TypeError, ValueError):
            return [INVALID_PARAMS if failed is None else failed] * len(keys)
        return [convert(r) for r in results]
