"""The native API on an embedded store: batch calls, zero-copy reads, bad
input per key, whole-operation errors, threads."""

import threading
import tracemalloc

import numpy as np
import pytest

import corokv
from corokv import Status
from conftest import keys_and_values


def test_put_exist_query_get_remove(store):
    keys, values = keys_and_values("basic", 8, 3000)
    assert store.batch_put(keys, values) == [Status.SUCCESS] * 8
    assert store.batch_exist(keys + ["missing"]) == [Status.SUCCESS] * 8 + [Status.NOT_FOUND]
    prefix = store.batch_exist_prefix(keys[:3] + ["missing"] + keys[3:])
    assert (prefix.matched, prefix.stopped_by) == (3, Status.NOT_FOUND)

    results = store.batch_query(keys)
    assert all(r.ok and r.size == 3000 and r.lease_seconds_left > 0 for r in results)
    out = [bytearray(3000) for _ in keys]
    before = store.counters()["metadata_round_trips"]
    got = store.batch_get_into(keys, out, results)
    assert [g.status for g in got] == [Status.SUCCESS] * 8
    assert all(g.source == "caller" and g.size == 3000 for g in got)
    assert store.counters()["metadata_round_trips"] == before  # the leases held: no round trip
    assert [bytes(o) for o in out] == values

    assert store.batch_remove(keys[:2] + ["missing"]) == [Status.SUCCESS, Status.SUCCESS, Status.NOT_FOUND]
    assert store.batch_exist(keys[:3]) == [Status.NOT_FOUND, Status.NOT_FOUND, Status.SUCCESS]


def test_query_results_can_be_kept_and_handed_back_later(store):
    keys, values = keys_and_values("kept", 4, 100)
    store.batch_put(keys, values)
    cache = dict(zip(keys, store.batch_query(keys)))  # an upper layer's query cache
    wanted = [keys[2], keys[0], "not-cached"]
    before = store.counters()["metadata_round_trips"]
    got = store.batch_get(wanted, [cache.get(k) for k in wanted])
    assert store.counters()["metadata_round_trips"] == before + 1  # only the uncached key was queried
    assert [g.source for g in got] == ["caller", "caller", "none"]
    assert [g.status for g in got] == [Status.SUCCESS, Status.SUCCESS, Status.NOT_FOUND]
    assert bytes(got[0].data) == values[2] and bytes(got[1].data) == values[0]
    assert got[2].data is None
    strict = store.batch_get_into(wanted, [bytearray(100) for _ in wanted], [cache.get(k) for k in wanted], strict=True)
    assert strict[2].status == Status.NOT_FOUND and strict[2].source == "none"


def test_get_into_writes_a_numpy_arrays_own_memory_without_a_copy(store):
    count, size = 16, 256 << 10
    keys, values = keys_and_values("numpy", count, size)
    store.batch_put(keys, values)
    pages = np.zeros((count, size), dtype=np.uint8)
    address = pages.ctypes.data
    tracemalloc.start()
    try:
        got = store.batch_get_into(keys, list(pages))  # each row is a view of `pages`
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(g.status == Status.SUCCESS and g.size == size for g in got)
    assert pages.ctypes.data == address
    for i in range(count):
        assert pages[i].tobytes() == values[i]
    # Nothing the size of a value was allocated on the way (numpy's and
    # Python's allocations are traced): the bytes went straight into the rows.
    assert peak < size


def test_batch_get_returns_memoryviews_over_store_owned_memory(store):
    keys, values = keys_and_values("owned", 4, 5000)
    store.batch_put(keys, values)
    got = store.batch_get(keys)
    views = [g.data for g in got]
    assert all(isinstance(v, memoryview) and v.readonly is False for v in views)
    assert [bytes(v) for v in views] == values
    # The same bytes, not a copy: the view's address is the handle's.
    buffer = views[0].obj
    assert isinstance(buffer, corokv.Buffer) and buffer.size() == 5000
    assert np.frombuffer(views[0], dtype=np.uint8).ctypes.data == buffer.ptr()
    del got, views, buffer  # back to the pool
    # The pool is 16 MiB: reading 8 MiB twice needs the first handles freed.
    big_keys, big_values = keys_and_values("big", 2, 4 << 20)
    store.batch_put(big_keys, big_values)
    for _ in range(3):
        again = store.batch_get(big_keys)
        assert [g.status for g in again] == [Status.SUCCESS] * 2
        del again


def test_bad_input_gets_a_clear_per_key_status_and_loses_nothing(store):
    long_key = "x" * 1025
    keys = ["good-1", "", long_key, "good-1", "good-2"]
    values = [b"a" * 10, b"b", b"c", b"d", b"e" * 20]
    assert store.batch_put(keys, values) == [
        Status.SUCCESS, Status.INVALID_KEY, Status.INVALID_KEY, Status.DUPLICATE_KEY, Status.SUCCESS]
    # Values that are not bytes-like are refused per key, the rest go on.
    assert store.batch_put(["n1", "n2", "n3"], [b"ok", "a str", 42]) == [
        Status.SUCCESS, Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT]

    short, readonly = bytearray(5), b"x" * 100
    strided = np.zeros((2, 40), dtype=np.uint8)[:, ::2]  # not contiguous
    out = [bytearray(10), short, readonly, strided, bytearray(20), (12345, 10)]
    got = store.batch_get_into(["good-1", "good-2", "good-2", "good-2", "good-2", "good-2"], out)
    assert [g.status for g in got] == [
        Status.SUCCESS, Status.BUFFER_TOO_SMALL, Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT,
        Status.DUPLICATE_KEY, Status.INVALID_ARGUMENT]  # (address, size) outside any registered buffer
    assert bytes(out[0]) == b"a" * 10
    assert store.batch_get(["good-2"])[0].status == Status.SUCCESS  # nothing lost
    assert store.batch_exist(["good-1", "good-2", "n1"]) == [Status.SUCCESS] * 3
    with pytest.raises(TypeError):
        store.batch_exist(["fine", 7])


def test_whole_operation_failures_raise_error_with_the_code(store):
    with pytest.raises(corokv.Error) as e:
        store.batch_put(["a", "b"], [b"1"])
    assert e.value.code == Status.INVALID_ARGUMENT and e.value.category == "corokv"
    with pytest.raises(corokv.Error) as e:
        store.batch_get_into(["a"], [bytearray(1)], [])  # query results not aligned with the keys
    assert e.value.code == Status.INVALID_ARGUMENT
    store.close()
    with pytest.raises(ValueError):
        store.batch_exist(["a"])


def test_registered_memory_by_address_and_by_object(store):
    keys, values = keys_and_values("reg", 4, 4096)
    source = np.frombuffer(b"".join(values), dtype=np.uint8).copy()
    target = bytearray(4 * 4096)
    store.register_buffer(source.ctypes.data, source.nbytes)
    store.register_buffer(target)
    assert store.registered_buffers == 2
    with pytest.raises(corokv.Error):
        store.register_buffer(source.ctypes.data + 4096, 4096)  # overlaps
    base = source.ctypes.data
    assert store.batch_put_from(keys, [(base + i * 4096, 4096) for i in range(4)]) == [Status.SUCCESS] * 4
    view = np.frombuffer(target, dtype=np.uint8)
    tbase = view.ctypes.data
    got = store.batch_get_into(keys, [(tbase + i * 4096, 4096) for i in range(4)])
    assert [g.status for g in got] == [Status.SUCCESS] * 4
    assert bytes(target) == b"".join(values)
    # A range that runs past the end of its region is refused.
    assert store.batch_get_into(keys[:1], [(tbase + 3 * 4096 + 1, 4096)])[0].status == Status.INVALID_ARGUMENT
    with pytest.raises(BufferError):
        target.extend(b"x")  # registered: the bytearray cannot move
    store.unregister_buffer(target)
    store.unregister_buffer(source.ctypes.data)
    assert store.registered_buffers == 0
    with pytest.raises(corokv.Error):
        store.unregister_buffer(source.ctypes.data)
    assert store.batch_get_into(keys[:1], [(tbase, 4096)])[0].status == Status.INVALID_ARGUMENT


def test_remove_all_and_counters(store):
    keys, values = keys_and_values("all", 10, 100)
    store.batch_put(keys, values)
    assert store.remove_all() == 10
    assert store.batch_exist(keys) == [Status.NOT_FOUND] * 10
    assert store.remove_all() == 0
    c = store.counters()
    assert c["bytes_written"] == 1000
    assert c["lanes"]["memcpy"]["bytes_written"] == 1000


def test_many_python_threads_use_one_store_at_once(store):
    errors = []

    def worker(n):
        try:
            keys, values = keys_and_values(f"thread{n}", 16, 8192)
            for _ in range(20):
                assert store.batch_put(keys, values) == [Status.SUCCESS] * 16
                out = [bytearray(8192) for _ in keys]
                got = store.batch_get_into(keys, out)
                assert all(g.status == Status.SUCCESS for g in got)
                assert [bytes(o) for o in out] == values
                assert store.batch_remove(keys) == [Status.SUCCESS] * 16
        except Exception as e:  # reported below, with the thread's number
            errors.append((n, e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.operations_in_flight() == 0


def test_the_status_enum_mirrors_the_library_codes():
    assert Status.SUCCESS == 0 and Status.NOT_FOUND == 1 and Status.POOL_EXHAUSTED == 21
    assert corokv.status_message(Status.NOT_FOUND) == "key not found"
    assert len(Status) == 22
