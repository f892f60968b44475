"""Hostile calls must never kill the interpreter.

The calls (hostile.py) run in child processes, in batches; a child that
dies of a signal fails the test with the case that killed it (the last one
it started, confirmed alone, or else the shortest prefix of its batch that
still kills it). Every outcome is judged: only a result, TypeError,
ValueError, corokv.Error or the hostile object's own exception; a
TypeError or ValueError names the argument; never pybind11's "Unable to
cast"; the blocking, submitted and asyncio forms of an operation agree;
uninitialised objects raise TypeError, closed stores ValueError; the
Mooncake surface answers Mooncake's codes.

Then the interpreter exits with work in flight, each way in a process of
its own: it must exit with the status its main thread chose.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hostile
from corokv.mooncake import MOONCAKE_CODES

CHILD = Path(__file__).with_name("hostile.py")
ORDINARY = {"returned", "TypeError", "ValueError", "Error", "Hostile"}
MOONCAKE_ANSWERS = set(MOONCAKE_CODES.values()) | {-1}
BATCH = 1200  # cases per child: a child starts in ~0.2 s


def run_child(ids, env=None, timeout=120):
    """(returncode, outcomes by id, the case started and not done, stderr)."""
    try:
        p = subprocess.run([sys.executable, str(CHILD)], input="\n".join(ids) + "\n", capture_output=True,
                           text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
        stdout, stderr, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc = "timeout"
    outcomes, started = {}, None
    for line in stdout.splitlines():
        if line.startswith("START "):
            started = line[len("START "):]
        elif line.startswith("DONE "):
            done = json.loads(line[len("DONE "):])
            outcomes[done["id"]] = done["outcome"]
            started = None
    return rc, outcomes, started, stderr


# In a sanitised build: what a sanitiser says when it finds something
# (UBSan goes on after saying it).
SANITIZER_REPORTS = ("runtime error:", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer")


def sanitizer_report(stderr):
    return next((line for line in stderr.splitlines() if any(r in line for r in SANITIZER_REPORTS)), None)


def died(rc):
    return rc == "timeout" or rc < 0


def culprit(ids, started, env):
    """Which case kills the child: the one it was running, if it kills a
    child alone; else the last case of the shortest prefix that kills."""
    rc, _, _, stderr = run_child([started], env)
    if died(rc):
        return f"{started} (alone: {describe_rc(rc)}; {stderr.strip()[-500:]})"
    lo, hi = 1, ids.index(started) + 1  # ids[:hi] kills
    while lo < hi:
        mid = (lo + hi) // 2
        if died(run_child(ids[:mid], env)[0]):
            hi = mid
        else:
            lo = mid + 1
    return f"{ids[hi - 1]} (after the {hi - 1} cases before it in its batch; not alone)"


def describe_rc(rc):
    if rc == "timeout":
        return "hung"
    return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"


def mooncake_answers(value):
    if isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
        return []
    if isinstance(value, int):
        return [] if value >= 0 or value in MOONCAKE_ANSWERS else [value]
    if isinstance(value, list):
        return [bad for v in value for bad in mooncake_answers(v)]
    return []


def judge(case, outcome):
    """What is wrong with a case's outcome (empty: nothing)."""
    problems = []
    forms = outcome["forms"].items() if case.forms else [("", outcome)]
    for form, o in forms:
        kind, message = o["kind"], o.get("message", "")
        where = f"{form}: " if form else ""
        if kind not in ORDINARY:
            problems.append(f"{where}raised {kind}: {message}")
        elif case.expect is not None and kind not in case.expect:
            problems.append(f"{where}expected {sorted(case.expect)}, got {kind}: {message or o.get('value')}")
        if "Unable to cast" in message or "incompatible function arguments" in message:
            problems.append(f"{where}pybind11's message: {message}")
        if kind in ("TypeError", "ValueError") and case.slot and not case.mooncake:
            names = hostile.ALIASES.get(case.slot, (case.slot,))
            if not any(n in message for n in names) and "closed store" not in message:
                problems.append(f"{where}{kind} does not name {case.slot}: {message}")
        if case.mooncake and kind == "returned":
            bad = mooncake_answers(o.get("value"))
            if bad:
                problems.append(f"answers that are not Mooncake codes: {bad}")
    if case.forms:
        kinds = {form: o["kind"] for form, o in outcome["forms"].items()}
        if len(set(kinds.values())) > 1:
            problems.append(f"the forms disagree: {kinds}")
    return problems


def sweep(cases, env=None):
    """Runs the cases in batches; the problems found, and the outcomes."""
    problems, outcomes = [], {}
    ids = [c.id for c in cases]
    by_id = {c.id: c for c in cases}
    pending = list(ids)
    while pending:
        batch, pending = pending[:BATCH], pending[BATCH:]
        rc, got, started, stderr = run_child(batch, env)
        outcomes.update(got)
        if died(rc):
            where = culprit(batch, started, env) if started else "(no case running)"
            problems.append(f"a child {describe_rc(rc)} running {where}")
            if started:  # the rest of its batch still runs
                pending = batch[batch.index(started) + 1:] + pending
        elif rc != 0:
            problems.append(f"a child exited with {rc}: {stderr[-2000:]}")
        report_line = sanitizer_report(stderr)
        if report_line:
            problems.append(f"a child's sanitiser: {report_line}")
    for case_id in ids:
        if case_id in outcomes:
            problems.extend(f"{case_id}: {p}" for p in judge(by_id[case_id], outcomes[case_id]))
        elif not any(case_id in p for p in problems):
            problems.append(f"{case_id}: no outcome")
    return problems, outcomes


def report(problems, cases):
    crashes = [p for p in problems if p.startswith("a child")]
    return (f"{len(problems)} problems in {len(cases)} cases, {len(crashes)} crashes:\n" +
            "\n".join((crashes + [p for p in problems if p not in crashes])[:80]))


def test_no_hostile_call_kills_the_interpreter_and_each_raises_what_it_should():
    cases = hostile.all_cases()
    problems, outcomes = sweep(cases)
    assert problems == [], report(problems, cases)
    # Some cases the issue named, by their outcome.
    assert outcomes["op-batch_get_into:batch_get_into(buffers=None)"]["forms"]["async"]["kind"] == "TypeError"
    assert outcomes["functions:corokv.Store(segment_size=4095)"]["kind"] == "ValueError"
    assert outcomes["methods:add_segment(size=4095)"]["kind"] == "ValueError"
    assert outcomes["functions:corokv.parse_address(address=None)"]["kind"] == "TypeError"
    invalid = int(hostile.Status.INVALID_ARGUMENT)
    for dtype in ("object array", "struct array with an object field"):
        assert outcomes[f"op-batch_put:batch_put(values=[{dtype}])"]["forms"]["blocking"]["value"] == [invalid]
        assert outcomes[f"op-batch_get_into:batch_get_into(buffers=[{dtype}])"]["forms"]["blocking"]["value"] == [
            {"status": invalid}]
    assert outcomes["op-batch_put:batch_put(values=[float64 array])"]["forms"]["blocking"]["value"] == [
        int(hostile.Status.SUCCESS)]
    assert outcomes["methods:register_buffer(buffer=object array)"]["kind"] == "TypeError"
    assert outcomes["op-batch_get:batch_get(query_results=[Buffer])"]["forms"]["blocking"]["kind"] == "TypeError"
    assert outcomes["uninitialised:Store.node"]["kind"] == "TypeError"
    assert outcomes["construction:QueryResult:T.__new__(T)"]["kind"] == "TypeError"


def test_the_same_calls_on_a_cluster_store(master):
    cases = hostile.all_cases(cluster=True)
    problems, _ = sweep(cases, {"COROKV_HOSTILE_MASTER": master.address})
    assert problems == [], report(problems, cases)


# ------------------------------------------------------------ exits with work in flight
PRELUDE = """
import asyncio, os, signal, sys, threading, time
import corokv
from corokv.mooncake import MooncakeDistributedStore

def forever(f):
    def loop():
        while True:
            try:
                f()
            except (ValueError, corokv.Error):
                pass  # refused once the store is closed at exit: try again
    threading.Thread(target=loop, daemon=True).start()

keys = [f"k{i}" for i in range(16)]
values = [bytes(4096)] * 16
"""

EXITS = {
    # The case: daemon threads loop put/get/remove; main returns.
    "blocking calls in daemon threads": """
        s = corokv.Store(segment_size=16 << 20)
        def work():
            s.batch_put(keys, values); s.batch_get(keys); s.batch_get_into(keys, [bytearray(4096)] * 16)
            s.batch_remove(keys)
        for _ in range(4):
            forever(work)
        time.sleep(0.3)
    """,
    "asyncio calls in a daemon thread's loop": """
        s = corokv.Store(segment_size=16 << 20)
        async def many():
            while True:
                try:
                    await asyncio.gather(*(s.batch_put_async([f"a{i}"], [bytes(1024)]) for i in range(50)),
                                         *(s.batch_get_async([f"a{i}"]) for i in range(50)))
                except (ValueError, corokv.Error):
                    pass
        threading.Thread(target=lambda: asyncio.run(many()), daemon=True).start()
        time.sleep(0.3)
    """,
    "submitted operations never drained": """
        s = corokv.Store(segment_size=16 << 20)
        forever(lambda: [s.submit_batch_put([f"s{i}"], [bytes(512)]) for i in range(20)])
        forever(lambda: s.submit_batch_get(keys))
        time.sleep(0.3)
    """,
    "stores made, closed and dropped in daemon threads": """
        forever(lambda: corokv.Store(segment_size=1 << 20, buffer_pool_size=1 << 20).close())
        forever(lambda: corokv.Store(segment_size=1 << 20, buffer_pool_size=1 << 20))
        def with_work():
            t = corokv.Store(segment_size=1 << 20, buffer_pool_size=1 << 20)
            t.batch_put(keys, [bytes(64)] * 16)
            t.submit_batch_get(keys)
        forever(with_work)
        time.sleep(0.3)
    """,
    "a store never closed, in a reference cycle": """
        s = corokv.Store(segment_size=1 << 20)
        s.cycle = s
        s.batch_put(keys, values)
        forever(lambda: s.batch_get(keys))
        time.sleep(0.1)
    """,
    "the Mooncake surface in daemon threads": """
        m = MooncakeDistributedStore()
        assert m.setup("127.0.0.1", "P2PHANDSHAKE", 16 << 20, 4 << 20, "tcp", "", "embedded") == 0
        forever(lambda: (m.put_batch(keys, values), m.get_batch(keys), m.batch_remove(keys)))
        forever(lambda: (m.put_batch(keys, values), m.get_batch(keys), m.batch_remove(keys)))
        time.sleep(0.3)
    """,
    "sys.exit(3) from the main thread": """
        s = corokv.Store(segment_size=16 << 20)
        forever(lambda: (s.batch_put(keys, values), s.batch_get(keys), s.batch_remove(keys)))
        time.sleep(0.2)
        sys.exit(3)
    """,
    "an exception in the main thread": """
        s = corokv.Store(segment_size=16 << 20)
        forever(lambda: (s.batch_put(keys, values), s.batch_get(keys), s.batch_remove(keys)))
        time.sleep(0.2)
        raise SystemError("the main thread fails")
    """,
    # A cluster store whose master stops answering: calls wait for their
    # timeout; the exit waits for the blocking ones and cancels the others.
    "cluster calls waiting for a stopped master": """
        s = corokv.ClusterStore(os.environ["MASTER"], segment_size=8 << 20, request_timeout=0.5,
                                heartbeat_interval=0.2)
        s.batch_put(keys, values)
        async def waiting():
            while True:
                try:
                    await asyncio.gather(*(s.batch_query_async([f"q{i}"]) for i in range(20)))
                except (ValueError, corokv.Error):
                    pass
        threading.Thread(target=lambda: asyncio.run(waiting()), daemon=True).start()
        forever(lambda: s.batch_exist(["nope"]))
        time.sleep(0.2)
        os.kill(int(os.environ["MASTER_PID"]), signal.SIGSTOP)
        time.sleep(0.3)
    """,
}
EXPECTED_STATUS = {"sys.exit(3) from the main thread": 3, "an exception in the main thread": 1}


@pytest.mark.parametrize("way", list(EXITS))
def test_exit_with_work_in_flight_returns_the_main_threads_status(way, request):
    env = dict(os.environ)
    if "MASTER" in EXITS[way]:
        master = request.getfixturevalue("master")
        env.update(MASTER=master.address, MASTER_PID=str(master.process.pid))
    script = PRELUDE + textwrap.dedent(EXITS[way])
    runs = int(os.environ.get("COROKV_HOSTILE_EXIT_RUNS", "1"))
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
        if "MASTER" in EXITS[way]:
            master.resume()  # the script stopped it
        assert p.returncode == EXPECTED_STATUS.get(way, 0), f"{describe_rc(p.returncode)}:\n{p.stderr[-3000:]}"
        assert "terminate called" not in p.stderr and "Fatal Python error" not in p.stderr, p.stderr[-3000:]
        assert sanitizer_report(p.stderr) is None, p.stderr[-3000:]
