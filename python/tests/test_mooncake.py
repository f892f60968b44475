"""The Mooncake-compatible surface, driven the way SGLang's and LMCache's
Mooncake backends drive a store: probe, put the missing pages from a
registered host buffer, read them back into another registered buffer,
check every byte, clear."""

import numpy as np
import pytest

from corokv import Status, _corokv, status_message
from corokv.mooncake import MOONCAKE_CODES, MooncakeDistributedStore, ReplicateConfig, mooncake_code

PAGE = 64 << 10
PAGES = 32


@pytest.fixture
def mooncake(master):
    store = MooncakeDistributedStore()
    assert store.setup("127.0.0.1", "P2PHANDSHAKE", 64 << 20, 16 << 20, "tcp", "", master.address) == 0
    yield store
    assert store.close() == 0


def test_the_kv_cache_backend_flow(mooncake, master):
    host = np.random.default_rng(7).integers(0, 256, size=(PAGES, PAGE), dtype=np.uint8)
    target = np.zeros((PAGES, PAGE), dtype=np.uint8)
    assert mooncake.register_buffer(host.ctypes.data, host.nbytes) == 0
    assert mooncake.register_buffer(target.ctypes.data, target.nbytes) == 0
    keys = [f"prefix-hash-{i}_0_k" for i in range(PAGES)]
    ptrs = [host.ctypes.data + i * PAGE for i in range(PAGES)]
    sizes = [PAGE] * PAGES

    # Half the pages are already there; the probe finds which are missing.
    assert mooncake.batch_put_from(keys[::2], ptrs[::2], sizes[::2]) == [0] * (PAGES // 2)
    exist = mooncake.batch_is_exist(keys)
    assert exist == [1, 0] * (PAGES // 2)
    missing = [i for i, e in enumerate(exist) if e != 1]
    codes = mooncake.batch_put_from([keys[i] for i in missing], [ptrs[i] for i in missing],
                                    [sizes[i] for i in missing], ReplicateConfig())
    assert codes == [0] * len(missing)
    assert mooncake.is_batch_exist(keys) == [1] * PAGES

    read = mooncake.batch_get_into(keys, [target.ctypes.data + i * PAGE for i in range(PAGES)], sizes)
    assert read == [PAGE] * PAGES
    assert np.array_equal(host, target)

    # A second client (another engine instance) sees the same pages.
    other = MooncakeDistributedStore()
    assert other.setup({"local_hostname": "127.0.0.1", "metadata_server": "P2PHANDSHAKE",
                        "global_segment_size": "0", "local_buffer_size": "16MB", "protocol": "tcp",
                        "master_server_addr": master.address}) == 0
    assert other.get(keys[3]) == host[3].tobytes()
    buffers = other.batch_get_buffer(keys[:2] + ["nope"])
    assert bytes(buffers[1]) == host[1].tobytes() and buffers[1].size() == PAGE and buffers[2] is None
    assert other.close() == 0

    assert mooncake.remove_all() == PAGES
    assert mooncake.batch_is_exist(keys[:3]) == [0, 0, 0]
    assert mooncake.unregister_buffer(host.ctypes.data) == 0
    assert mooncake.unregister_buffer(target.ctypes.data) == 0


def test_return_conventions_and_codes(mooncake):
    assert mooncake.put("k", b"value", ReplicateConfig(replica_num=1)) == 0
    assert mooncake.put("k", b"again") == MOONCAKE_CODES[Status.ALREADY_EXISTS] == -705
    assert mooncake.get("k") == b"value"
    assert mooncake.get("missing") == b""
    assert mooncake.get_size("k") == 5 and mooncake.get_size("missing") == -704
    assert mooncake.is_exist("k") == 1 and mooncake.is_exist("missing") == 0 and mooncake.is_exist("") == -1
    assert mooncake.put_batch(["a", "b"], [b"1", b"22"]) == 0
    assert mooncake.get_batch(["a", "b", "c"]) == [b"1", b"22", b""]
    assert mooncake.get_buffer("missing") is None
    assert bytes(mooncake.get_buffer("b")) == b"22"

    buf = np.zeros(64, dtype=np.uint8)
    assert mooncake.register_buffer(buf.ctypes.data, buf.nbytes) == 0
    base = buf.ctypes.data
    # Bytes read, or a code: not found, short buffer, unregistered memory.
    assert mooncake.batch_get_into(["a", "missing", "b", "a"], [base, base + 8, base + 16, 4096], [8, 8, 1, 8]) == [
        1, -704, -600, -600]
    assert mooncake.get_into("b", base + 32, 8) == 2 and bytes(buf[32:34]) == b"22"
    assert mooncake.batch_put_from(["p"], [base + 32], [2]) == [0]
    assert mooncake.batch_put_from(["q"], [12345], [2]) == [-600]  # not registered
    assert mooncake.put_from("", base, 2) == -400  # invalid key
    assert mooncake.batch_put_from(["x", "y"], [base], [1, 2]) == [-600, -600]  # lists not aligned

    assert mooncake.remove("a") == 0 and mooncake.remove("a") == -704
    assert mooncake.batch_remove(["b", "missing"]) == [0, -704]
    assert mooncake.unregister_buffer(base) == 0
    assert mooncake.unregister_buffer(base) == -600
    assert mooncake.get_hostname() == "127.0.0.1"
    assert mooncake.health_check() == 0


def test_multi_buffer_variants_gather_and_scatter(mooncake):
    memory = np.zeros(8192, dtype=np.uint8)  # one registered region holds every part
    assert mooncake.register_buffer(memory.ctypes.data, memory.nbytes) == 0
    parts = [memory[i * 1000:(i + 1) * 1000] for i in range(3)]
    for i, p in enumerate(parts):
        p[:] = i + 1
    ptrs = [p.ctypes.data for p in parts]
    assert mooncake.batch_put_from_multi_buffers(["mb"], [ptrs], [[1000, 1000, 1000]]) == [0]
    out = [memory[4000:5500], memory[5500:7000]]
    assert mooncake.batch_get_into_multi_buffers(["mb"], [[o.ctypes.data for o in out]], [[1500, 1500]]) == [3000]
    assert np.array_equal(np.concatenate(out), np.concatenate(parts))
    # Parts too small for the object, and parts outside registered memory:
    # -600, and no raw pointer is touched.
    assert mooncake.batch_get_into_multi_buffers(["mb"], [[memory.ctypes.data + 7000]], [[100]]) == [-600]
    elsewhere = np.zeros(4000, dtype=np.uint8)
    assert mooncake.batch_get_into_multi_buffers(["mb"], [[elsewhere.ctypes.data]], [[4000]]) == [-600]
    assert mooncake.batch_put_from_multi_buffers(["mb2"], [[12345]], [[10]]) == [-600]
    assert not elsewhere.any()
    assert mooncake.unregister_buffer(memory.ctypes.data) == 0


def test_setup_refusals():
    s = MooncakeDistributedStore()
    assert s.batch_is_exist(["a"]) == [-1]  # not set up
    assert s.setup({"local_hostname": "h"}) == -600  # metadata_server missing
    assert s.setup("h", "m", 1 << 20, 1 << 20, "rdma", "mlx5_0", "127.0.0.1:1") == -600
    assert s.setup("h", "m", 1 << 20, 1 << 20, "tcp", "", "not-an-address") == -600
    assert s.setup("h", "m", "8MB", "1MB", "tcp", "", "embedded") == 0
    assert s.put("k", b"v") == 0 and s.get("k") == b"v"
    assert s.setup("h", "m", "8MB", "1MB", "tcp", "", "embedded") == -600  # already set up
    assert s.close() == 0


def test_codes_are_mooncakes_numbers():
    assert mooncake_code(Status.LEASE_EXPIRED) == -707 and mooncake_code(Status.TRANSFER_FAILED) == -800
    assert mooncake_code(Status.NOT_FOUND) == -704 and mooncake_code(Status.INVALID_KEY) == -400
    assert mooncake_code(Status.TIMEOUT) == -901 and mooncake_code(Status.NO_SPACE) == -200
    assert all(MOONCAKE_CODES[s] < 0 for s in Status if s != Status.SUCCESS)


def test_status_and_mooncake_codes_cover_the_error_table():
    table = _corokv.error_table
    assert [(s.name, int(s)) for s in Status] == [(name.upper(), code) for code, name, *_ in table]
    kinds = {"outcome", "argument", "connection", "internal"}
    for code, name, message, kind, mooncake in table:
        assert message and status_message(Status(code)) == message
        assert kind in kinds
        assert MOONCAKE_CODES[Status(code)] == mooncake
        assert mooncake in _corokv.mooncake_codes.values()
    assert set(MOONCAKE_CODES) == set(Status)


def test_a_negative_address_is_refused_not_raised(mooncake):
    assert mooncake.register_buffer(-1, 4096) == -600
