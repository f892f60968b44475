"""The asyncio variants: awaiting on the running loop, many at once, and
cancellation that ends the task only once the operation has completed."""

import asyncio
import threading
import time

import numpy as np
import pytest

import corokv
from corokv import Status
from conftest import keys_and_values


def test_async_calls_on_the_running_loop(store):
    async def main():
        keys, values = keys_and_values("async", 16, 2048)
        assert await store.batch_put_async(keys, values) == [Status.SUCCESS] * 16
        assert await store.batch_exist_async(keys) == [Status.SUCCESS] * 16
        results = await store.batch_query_async(keys)
        out = np.zeros((16, 2048), dtype=np.uint8)
        got = await store.batch_get_into_async(keys, list(out), results)
        assert all(g.source == "caller" for g in got)
        assert all(out[i].tobytes() == values[i] for i in range(16))
        owned = await store.batch_get_async(keys[:2])
        assert [bytes(g.data) for g in owned] == values[:2]
        prefix = await store.batch_exist_prefix_async(keys)
        assert prefix.matched == 16
        assert await store.batch_remove_async(keys[:8]) == [Status.SUCCESS] * 8
        assert await store.remove_all_async() == 8

    asyncio.run(main())


def test_many_tasks_at_once_and_errors_as_exceptions(store):
    async def one(n):
        keys, values = keys_and_values(f"task{n}", 8, 1000)
        await store.batch_put_async(keys, values)
        out = [bytearray(1000) for _ in keys]
        got = await store.batch_get_into_async(keys, out)
        assert all(g.status == Status.SUCCESS for g in got)
        return [bytes(o) for o in out] == values

    async def main():
        assert all(await asyncio.gather(*(one(n) for n in range(50))))
        with pytest.raises(corokv.Error) as e:
            await store.batch_put_async(["a"], [])
        assert e.value.code == Status.INVALID_ARGUMENT

    asyncio.run(main())
    # A second loop gets a queue of its own; the first loop's is left alone.
    asyncio.run(main())


def test_cancelling_the_task_cancels_the_operation_and_waits_for_it(master):
    # The master is stopped: the get must query it, and waits. A metadata
    # call in flight is not abandoned (its reply could still be on its
    # way): the operation completes, cancelled, by the call's timeout.
    kv = corokv.ClusterStore(master.address, segment_size=8 << 20, request_timeout=1.5, heartbeat_interval=0.2)
    try:
        keys, values = keys_and_values("cancel", 4, 4096)
        kv.batch_put(keys, values)
        kv.remove_all()  # empties this store's cache too: the get must ask the master
        master.pause()
        buffers = [bytearray(4096) for _ in keys]

        async def main():
            task = asyncio.create_task(kv.batch_get_into_async(keys, buffers))
            await asyncio.sleep(0.3)
            assert kv.operations_in_flight() == 1
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The task ended only once the operation had: nothing can write
            # into `buffers` any more.
            assert kv.operations_in_flight() == 0
            assert time.monotonic() - started < 1.5 + 1.0  # bounded by the call's timeout
            master.resume()  # the store goes on
            assert await kv.batch_exist_async(["never-there"]) == [Status.NOT_FOUND]

        asyncio.run(main())
    finally:
        master.resume()
        kv.close()


def test_close_inside_the_loop_stops_watching_and_later_calls_raise():
    kv = corokv.Store(segment_size=1 << 20)

    async def main():
        assert await kv.batch_put_async(["a"], [b"1"]) == [Status.SUCCESS]
        kv.close()
        with pytest.raises(ValueError):
            await kv.batch_exist_async(["a"])

    asyncio.run(main())
    assert kv.closed


def test_close_from_another_thread_hands_awaiting_calls_their_results(master):
    kv = corokv.ClusterStore(master.address, segment_size=8 << 20, request_timeout=5.0, heartbeat_interval=0.2)
    keys, values = keys_and_values("closing", 4, 100)
    kv.batch_put(keys, values)
    master.pause()  # the exist below waits for the master

    async def main():
        task = asyncio.create_task(kv.batch_exist_async(keys))
        await asyncio.sleep(0.2)
        closer = threading.Thread(target=kv.close)  # waits for the exist
        closer.start()
        await asyncio.sleep(0.2)
        assert closer.is_alive()
        master.resume()
        assert await task == [Status.SUCCESS] * 4  # its real result, not an error
        await asyncio.get_running_loop().run_in_executor(None, closer.join)

    try:
        asyncio.run(main())
    finally:
        master.resume()
    assert kv.closed
