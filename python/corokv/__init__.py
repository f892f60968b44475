"""corokv: a batched KV-cache store for LLM serving engines.

Two store classes share one API:

    Store(segment_size=256 << 20, ...)           embedded: everything in this process
    ClusterStore("10.0.0.1:7400", segment_size=..., ...)   a node of a corokv cluster

Every batch call takes a list of keys (str or bytes) and answers a list
aligned with them. Per-key outcomes are ``Status`` members; a failure of the
whole operation raises ``Error`` (its ``code`` a ``Status``).

Three ways to wait:

- the plain calls block the calling thread, with the GIL released, so many
  Python threads can use one store at once;
- ``*_async`` coroutines await on the running asyncio loop; cancelling the
  task cancels the operation, and the task ends only once the store can no
  longer write into the caller's buffers;
- ``submit_*`` return a ticket; ``event_fd()`` is readable while
  completions wait and ``drain_completions()`` returns them, for loops that
  are neither threads nor asyncio.

Each store runs its own I/O thread (the C++ library itself starts none).
Stores still open when the interpreter exits are closed by an atexit hook
(later calls raise ValueError; calls in flight finish, submitted and
asyncio ones are cancelled), so daemon threads busy with a store do not
bring the exit down.
"""

import asyncio
import threading
import weakref

from ._corokv import (  # noqa: F401  (re-exported)
    Buffer,
    BufferResult,
    Completion,
    CompletionQueue,
    Error,
    GetResult,
    PrefixResult,
    QueryResult,
    Status,
    status_message,
)
from . import _corokv

__all__ = [
    "Store",
    "ClusterStore",
    "Status",
    "Error",
    "QueryResult",
    "GetResult",
    "BufferResult",
    "PrefixResult",
    "Completion",
    "CompletionQueue",
    "Buffer",
    "status_message",
    "parse_address",
]


def parse_address(address):
    """'host:port' (or '[v6]:port') -> (host, port). TypeError if `address`
    is not a str, ValueError if it is not HOST:PORT with a port from 1 to
    65535."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str 'HOST:PORT', not {type(address).__name__}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"address must be HOST:PORT with a port from 1 to 65535, not {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _resolve(future, done):
    """Hands a Completion to its future (on the future's loop)."""
    if future is None or future.done():
        return
    if done.error is not None:
        future.set_exception(done.error)
    else:
        future.set_result(done.result)


class _AsyncMixin:
    """The asyncio variants, built on the submit_* calls: batch_x_async
    awaits submit_batch_x, which takes and checks its arguments as the
    blocking batch_x does (one builder per operation in the binding).

    Each event loop gets a completion queue of its own, watched with
    loop.add_reader: the store's I/O thread only writes the queue's eventfd
    and never waits for the GIL, and the loop resolves its futures itself
    when the fd is readable.
    """

    def _async_state(self):
        """(queue per loop, future per ticket, lock): the lock orders a
        submission and its future against close()."""
        state = self.__dict__.get("_async")
        if state is None:
            state = self.__dict__.setdefault("_async", (weakref.WeakKeyDictionary(), {}, threading.Lock()))
        return state

    def _queue_for(self, loop):
        queues, _, _ = self._async_state()
        queue = queues.get(loop)
        if queue is None:
            queue = self._new_queue()
            loop.add_reader(queue.fileno(), self._deliver, queue)
            queues[loop] = queue
        return queue

    def _deliver(self, queue):
        _, pending, _ = self._async_state()
        for done in queue.drain():
            _resolve(pending.pop(done.ticket, None), done)

    async def _await(self, submit, *args, **kwargs):
        loop = asyncio.get_running_loop()
        _, pending, lock = self._async_state()
        future = loop.create_future()
        with lock:
            queue = self._queue_for(loop)
            ticket = submit(*args, queue=queue, **kwargs)
            pending[ticket] = future
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                self.cancel(ticket)
                # The operation may still write into the caller's buffers
                # until it completes: wait for that, even if cancelled again.
                while not future.done():
                    try:
                        await asyncio.wait([future])
                    except asyncio.CancelledError:
                        pass
            if not future.cancelled():
                future.exception()  # retrieved: the task's answer is CancelledError
            raise

    def close(self):
        """Waits for the operations in flight, then leaves and stops the
        I/O thread. asyncio calls still awaiting get their results (on
        their own loops); the loops stop watching this store."""
        queues, pending, lock = self._async_state()
        with lock:
            self._shut_down()  # every operation has completed: its completion is queued
            try:
                current = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            for loop, queue in list(queues.items()):
                if loop.is_closed():
                    continue
                here = loop is current or not loop.is_running()
                for done in queue.drain():
                    future = pending.pop(done.ticket, None)
                    if here:
                        _resolve(future, done)
                    elif future is not None:
                        loop.call_soon_threadsafe(_resolve, future, done)
                if here:
                    loop.remove_reader(queue.fileno())
                else:  # another thread's loop: it stops watching on its own thread
                    loop.call_soon_threadsafe(loop.remove_reader, queue.fileno())
            super().close()
            pending.clear()
            queues.clear()


def _async_variant(name):
    """name_async: awaits submit_name on the running loop (see _await)."""
    submit = "submit_" + name

    async def variant(self, *args, **kwargs):
        return await self._await(getattr(self, submit), *args, **kwargs)

    variant.__name__ = name + "_async"
    variant.__qualname__ = "_AsyncMixin." + variant.__name__
    variant.__doc__ = f"{name}, awaited on the running asyncio loop: takes the arguments of {name}."
    return variant


# One for each batch operation the binding declares (its table of store
# operations), with the arguments of the blocking form.
for _name in _corokv.Store._operations:
    setattr(_AsyncMixin, _name + "_async", _async_variant(_name))
del _name


class Store(_AsyncMixin, _corokv.Store):
    """The embedded store: metadata service, memory and data in this process.

    Store(segment_size=256 << 20, lease_ttl=5.0, cache_capacity=65536,
          buffer_pool_size=64 << 20, populate=True)
    """


class ClusterStore(_AsyncMixin, _corokv.ClusterStore):
    """A node of a corokv cluster, talking to a corokv-master.

    ClusterStore(master, segment_size=0, data_host="127.0.0.1", data_port=0,
                 advertise_host="", shared_memory=True, lanes=(),
                 request_timeout=5.0, heartbeat_interval=1.0, lease_ttl=5.0,
                 cache_capacity=65536, buffer_pool_size=64 << 20,
                 populate=True, node=0)

    ``master`` is "host:port". ``segment_size`` bytes of this process's
    memory are contributed to the cluster (0: none, a pure client).
    """

    def __init__(self, master, **options):
        try:
            host, port = parse_address(master)
        except (TypeError, ValueError) as e:
            raise type(e)(f"master: {e}") from None
        super().__init__(host, port, **options)
