"""batch_get_into from Python, against the same batch from C++ and against
numpy's copy of the same bytes, in one run.

    PYTHONPATH=<build>/python /usr/bin/python3 benchmarks/python_bench.py [--seconds S] [--rounds R] [--json FILE]

One embedded store. The batch (keys, query results, destination rows of one
numpy array) is built once; each round then times, back to back:

- python: store.batch_get_into(keys, rows, query_results) in a Python loop
  (the GIL released during each call, the I/O thread's hop included);
- c++:    the same call awaited in a loop by a C++ coroutine on the store's
          I/O thread (Store._cpp_get_into_loop: no Python in the loop);
- numpy:  np.copyto of the same bytes from a source array into the rows.

Rounds interleave the three so that drift hits them alike; the report is the
median of the per-round ratios, with the lowest and highest. The process is
pinned to one CPU (--cpu) before the store starts its I/O thread, so that
the Python loop and the C++ loop copy on the same core: on a VM whose two
vCPUs differ in speed from moment to moment, comparing two threads on two
cores measures the cores.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

import corokv


def timed_loop(call, seconds):
    """Calls call() until `seconds` passed; seconds per call."""
    n, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(8):
            call()
        n += 8
        now = time.perf_counter()
        if now >= deadline:
            return (now - started) / n


def cpp_per_call(store, keys, rows, results, seconds):
    """Iterations sized from a probe, so the C++ loop runs about `seconds`."""
    probe = store._cpp_get_into_loop(keys, rows, results, 8) / 8
    iterations = max(8, int(seconds / max(probe, 1e-9)))
    return store._cpp_get_into_loop(keys, rows, results, iterations) / iterations


def case(store, count, size, seconds, rounds):
    keys = [f"bench-{count}x{size}-{i}" for i in range(count)]
    source = np.random.default_rng(1).integers(0, 256, size=(count, size), dtype=np.uint8)
    assert store.batch_put(keys, list(source)) == [corokv.Status.SUCCESS] * count
    target = np.zeros_like(source)
    rows = list(target)
    results = store.batch_query(keys)
    got = store.batch_get_into(keys, rows, results)
    assert all(g.status == corokv.Status.SUCCESS for g in got) and np.array_equal(source, target)

    per_round = []
    for _ in range(rounds):
        results = store.batch_query(keys)  # fresh leases for the round
        py = timed_loop(lambda: store.batch_get_into(keys, rows, results), seconds)
        cpp = cpp_per_call(store, keys, rows, results, seconds)
        npc = timed_loop(lambda: np.copyto(target, source), seconds)
        per_round.append({"python_s": py, "cpp_s": cpp, "numpy_s": npc})
    nbytes = count * size

    def summary(key_a, key_b):
        ratios = [r[key_b] / r[key_a] for r in per_round]  # throughput a / throughput b
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}

    med = {k: statistics.median(r[k] for r in per_round) for k in ("python_s", "cpp_s", "numpy_s")}
    store.batch_remove(keys)
    return {
        "keys": count,
        "value_bytes": size,
        "python_us": med["python_s"] * 1e6,
        "cpp_us": med["cpp_s"] * 1e6,
        "numpy_us": med["numpy_s"] * 1e6,
        "python_gib_s": nbytes / med["python_s"] / 2**30,
        "cpp_gib_s": nbytes / med["cpp_s"] / 2**30,
        "numpy_gib_s": nbytes / med["numpy_s"] / 2**30,
        "python_over_cpp": summary("python_s", "cpp_s"),
        "python_over_numpy": summary("python_s", "numpy_s"),
        "python_overhead_us": (med["python_s"] - med["cpp_s"]) * 1e6,
        "rounds": per_round,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=0.3, help="per mode per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)), help="pin the process to this CPU")
    args = p.parse_args()
    os.sched_setaffinity(0, {args.cpu})  # before the store's I/O thread exists: it inherits this

    store = corokv.Store(segment_size=256 << 20, buffer_pool_size=0)
    rows = []
    try:
        for count, size in ((64, 64 << 10), (1, 4 << 10), (64, 4 << 10), (16, 1 << 20)):
            r = case(store, count, size, args.seconds, args.rounds)
            rows.append(r)
            print(f"{count:3d} x {size >> 10:5d} KiB: python {r['python_us']:9.1f} us  c++ {r['cpp_us']:9.1f} us  "
                  f"numpy {r['numpy_us']:9.1f} us | python/c++ {100 * r['python_over_cpp']['median']:5.1f}% "
                  f"({100 * r['python_over_cpp']['min']:.1f}-{100 * r['python_over_cpp']['max']:.1f})  "
                  f"python/numpy {100 * r['python_over_numpy']['median']:5.1f}%  "
                  f"overhead {r['python_overhead_us']:.1f} us/call")
    finally:
        store.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "python_bench", "cpu": args.cpu, "seconds": args.seconds, "rounds": args.rounds,
                       "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
