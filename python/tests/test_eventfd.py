"""The submit/drain interface, driven as a loop that is neither threads nor
asyncio would drive it: poll event_fd(), then drain_completions()."""

import select

import numpy as np
import pytest

import corokv
from corokv import Status
from conftest import keys_and_values


def wait_for(store, tickets, timeout=10.0):
    done = {}
    poller = select.poll()
    poller.register(store.event_fd(), select.POLLIN)
    while not tickets <= done.keys():
        assert poller.poll(int(timeout * 1000)), "no completion within the timeout"
        for c in store.drain_completions():
            done[c.ticket] = c
    return done


def test_submitted_batches_complete_through_the_eventfd(store):
    keys, values = keys_and_values("efd", 8, 4096)
    put = store.submit_batch_put(keys, values)
    done = wait_for(store, {put})
    assert done[put].error is None and done[put].result == [Status.SUCCESS] * 8

    pages = np.zeros((8, 4096), dtype=np.uint8)
    get = store.submit_batch_get_into(keys, list(pages))
    exist = store.submit_batch_exist(keys + ["missing"])
    owned = store.submit_batch_get(keys[:2])
    done = wait_for(store, {get, exist, owned})
    assert [g.status for g in done[get].result] == [Status.SUCCESS] * 8
    assert all(pages[i].tobytes() == values[i] for i in range(8))
    assert done[exist].result == [Status.SUCCESS] * 8 + [Status.NOT_FOUND]
    assert [bytes(b.data) for b in done[owned].result] == values[:2]

    remove = store.submit_batch_remove(keys[:4])
    done = wait_for(store, {remove})
    assert done[remove].result == [Status.SUCCESS] * 4
    # Nothing left: the fd is not readable, a drain is empty.
    assert select.select([store.event_fd()], [], [], 0)[0] == []
    assert store.drain_completions() == []


def test_a_whole_failure_arrives_as_the_completions_error(master):
    kv = corokv.ClusterStore(master.address, request_timeout=0.5)
    try:
        master.stop()
        ticket = kv.submit_batch_exist(["a", "b"])
        done = wait_for(kv, {ticket})
        assert done[ticket].result is None
        assert done[ticket].error.code in (Status.RPC_FAILED, Status.TIMEOUT)
    finally:
        kv.close()


def test_arguments_that_cannot_be_a_batch_raise_at_submit(store):
    with pytest.raises(corokv.Error) as e:
        store.submit_batch_put(["a", "b"], [b"1"])
    assert e.value.code == Status.INVALID_ARGUMENT
    assert store.operations_in_flight() == 0


def test_cancel_of_a_completed_ticket_says_so(store):
    ticket = store.submit_batch_exist(["x"])
    wait_for(store, {ticket})
    assert store.cancel(ticket) is False


def test_a_queue_of_another_store_is_refused(store):
    other = corokv.Store(segment_size=1 << 20)
    try:
        with pytest.raises(ValueError):
            store.submit_batch_exist(["a"], queue=other._new_queue())
    finally:
        other.close()
