"""ClusterStore against a real corokv-master process: data between two
nodes over TCP, remove_all through the master, the GIL released while a
call waits, and whole-operation failures when the master is gone."""

import threading
import time

import pytest

import corokv
from corokv import Status
from conftest import keys_and_values


def node(master, **options):
    options.setdefault("request_timeout", 3.0)
    options.setdefault("heartbeat_interval", 0.2)
    return corokv.ClusterStore(master.address, **options)


def test_two_nodes_over_tcp_and_remove_all_through_the_master(master):
    with node(master, segment_size=32 << 20, shared_memory=False) as owner, \
            node(master, shared_memory=False) as client:
        keys, values = keys_and_values("cluster", 32, 64 << 10)
        assert client.batch_put(keys, values) == [Status.SUCCESS] * 32  # into the owner's segment
        assert client.counters()["lanes"]["tcp"]["bytes_written"] == 32 * (64 << 10)
        out = [bytearray(64 << 10) for _ in keys]
        results = client.batch_query(keys)
        got = client.batch_get_into(keys, out, results)
        assert all(g.status == Status.SUCCESS and g.source == "caller" for g in got)
        assert [bytes(o) for o in out] == values
        owned = owner.batch_get(keys[:4])
        assert [bytes(g.data) for g in owned] == values[:4]
        assert client.remove_all() == 32
        assert owner.batch_exist(keys) == [Status.NOT_FOUND] * 32


def test_a_waiting_call_releases_the_gil(master):
    """While the master is stopped, one thread's call waits for it; another
    Python thread must run meanwhile: it is the one that resumes the master.
    Were the GIL held, the first call would time out."""
    with node(master, segment_size=8 << 20) as kv:
        keys, values = keys_and_values("gil", 4, 1000)
        kv.batch_put(keys, values)
        master.pause()
        outcome = {}

        def waiting_call():
            try:
                outcome["exist"] = kv.batch_exist(keys)
            except corokv.Error as e:
                outcome["error"] = e

        t = threading.Thread(target=waiting_call)
        t.start()
        time.sleep(0.5)  # the call is out, its reply cannot come
        spins = 0
        while spins < 200_000:  # Python code, on this thread, during the call
            spins += 1
        assert t.is_alive()
        master.resume()
        t.join(10)
        assert outcome == {"exist": [Status.SUCCESS] * 4}


def test_with_the_master_gone_calls_raise_error(master):
    with node(master, segment_size=8 << 20, request_timeout=0.5) as kv:
        keys, values = keys_and_values("gone", 2, 100)
        kv.batch_put(keys, values)
        assert all(r.ok for r in kv.batch_query(keys))  # leased, and in the store's cache
        master.stop()
        with pytest.raises(corokv.Error) as e:
            kv.batch_exist(keys)
        assert e.value.code in (Status.RPC_FAILED, Status.TIMEOUT)
        # A read whose lease is still held needs no master.
        assert [g.status for g in kv.batch_get(keys)] == [Status.SUCCESS] * 2


def test_a_bad_master_address_is_refused_at_construction():
    with pytest.raises(ValueError):
        corokv.ClusterStore("no-port-here")
