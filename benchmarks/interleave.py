#!/usr/bin/env python3
"""Runs two builds of the benchmarks in turn and compares their figures.

Before and after a change, on the same machine and in the same period:
round r runs every benchmark of the first build, then of the second (the
order flips each round, so neither side always runs on a warmer machine).
Each figure that says "more is better" (a ratio against a limit measured in
the same run, or a rate) is reported with both sides' medians and their
spread over the rounds; a figure whose after-side best is below its
before-side worst is marked "worse beyond spread".

  benchmarks/interleave.py --before OLD/build/bench --after NEW/build/bench \\
      --rounds 3 --seconds 0.5 get_bench net_bench meta_bench disk_bench ha_bench

Needs only Python 3; the JSON of every run is kept under --out.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

KEY_FIELDS = {"batch", "value_bytes", "threads", "in_flight", "keys_per_cycle", "segments", "shards"}


def is_figure(name):
    if name.endswith(("_p10", "_p90")) or name.startswith("target"):
        return False
    return "ratio" in name or "over" in name or name.endswith("_per_s") or name.endswith("gib_per_s")


def flatten(node, path, out):
    """Figures of one run: {(row identity, figure name): value}."""
    if isinstance(node, list):
        for item in node:
            flatten(item, path, out)
        return
    if not isinstance(node, dict):
        return
    identity = list(path)
    for k in sorted(node):
        v = node[k]
        if isinstance(v, str) or (k in KEY_FIELDS and isinstance(v, (int, float))):
            identity.append(f"{k}={v}")
    for k, v in node.items():
        if isinstance(v, (dict, list)):
            flatten(v, identity + [k] if isinstance(v, dict) else identity, out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and is_figure(k):
            out[(" ".join(identity), k)] = float(v)


def run(build, bench, seconds, json_path):
    cmd = [os.path.join(build, "benchmarks", bench), "--seconds", str(seconds), "--json", json_path]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    with open(json_path) as f:
        figures = {}
        flatten(json.load(f), [], figures)
        return figures


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="build directory of the code before the change")
    p.add_argument("--after", required=True, help="build directory of the code after the change")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.5, help="passed to each benchmark")
    p.add_argument("--out", default="/tmp/corokv-interleave", help="where each run's JSON is kept")
    p.add_argument("benchmarks", nargs="+")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sides = {"before": a.before, "after": a.after}
    figures = {side: {} for side in sides}  # side -> (bench, row, name) -> [values]
    for r in range(a.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for bench in a.benchmarks:
            for side in order:
                got = run(sides[side], bench, a.seconds, os.path.join(a.out, f"{bench}_{side}_{r}.json"))
                for (row, name), v in got.items():
                    figures[side].setdefault((bench, row, name), []).append(v)
            print(f"round {r + 1}/{a.rounds}: {bench} done", file=sys.stderr)
    worse = 0
    print("| benchmark | row | figure | before median [min-max] | after median [min-max] | after/before | |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(figures["before"]):
        b, f = figures["before"][key], figures["after"].get(key)
        if not f:
            continue
        mb, mf = statistics.median(b), statistics.median(f)
        flag = ""
        if max(f) < min(b):
            flag = "worse beyond spread"
            worse += 1
        ratio = mf / mb if mb else float("nan")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {mb:.4g} [{min(b):.4g}-{max(b):.4g}] | "
              f"{mf:.4g} [{min(f):.4g}-{max(f):.4g}] | {ratio:.3f} | {flag} |")
    print(f"\n{worse} figure(s) worse beyond spread", file=sys.stderr)


if __name__ == "__main__":
    main()
