"""Fixtures: an embedded store, and a real corokv-master process (the
executable named by COROKV_MASTER_EXE, as ctest and meson test set it)."""

import ctypes
import json
import os
import signal
import subprocess
import time

import pytest

import corokv


@pytest.fixture
def store():
    s = corokv.Store(segment_size=64 << 20, buffer_pool_size=16 << 20)
    yield s
    s.close()


_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec does as little as it can


def _die_with_parent():
    """In the child: SIGKILL when the test process dies, even by abort()."""
    pr_set_pdeathsig = 1
    _libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class Master:
    """corokv-master on a free port, stopped at the end of the test."""

    def __init__(self, tmp_path, node_ttl_ms=3000, maintenance_ms=50):
        """A silent node's segments are dropped after node_ttl_ms; the
        master's maintenance runs every maintenance_ms (None: its default)."""
        exe = os.environ.get("COROKV_MASTER_EXE")
        if not exe:
            pytest.fail("COROKV_MASTER_EXE is not set: run these tests through ctest or meson test")
        ready = tmp_path / "master-ready.json"
        timing = ["--node-ttl-ms", str(node_ttl_ms)]
        if maintenance_ms is not None:
            timing += ["--maintenance-ms", str(maintenance_ms)]
        self.process = subprocess.Popen(
            [exe, "--listen", "127.0.0.1:0", "--admin", "off", "--ready-file", str(ready)] + timing,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("corokv-master did not start: " + self.process.stderr.read().decode())
            time.sleep(0.01)
        self.port = json.loads(ready.read_text())["port"]
        self.address = f"127.0.0.1:{self.port}"

    def pause(self):
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


@pytest.fixture
def master(tmp_path):
    m = Master(tmp_path)
    yield m
    m.stop()


def keys_and_values(prefix, count, size):
    keys = [f"{prefix}-{i}" for i in range(count)]
    values = [bytes([(i * 7 + j) % 251 for j in range(256)]) * (size // 256) + bytes(size % 256) for i in range(count)]
    return keys, values
