"""Items 3 and 4 of the PostgreSQL targets, as ratios to ``pgbench``, over several rounds.

    ./scripts/bench ratio                      # 3 rounds, both targets
    ./scripts/bench ratio --rounds 5 --only serial
    python -m benchmarks.pg_ratio --rounds 3   # the same, from the repo's venv

Each round measures, one after the other on fresh databases:

* ``pgbench -N -c 1``, then ``postgres`` mode (one process, runs one after the other,
  4-step linear): target 3 is steps/s >= 0.6x the pgbench TPS of the same round;
* ``pgbench -N -c 4 -j 2``, then ``postgres-many`` mode (asyncio ``CheckpointingRunner``,
  200 runs in flight, a pool of 4): target 4 is steps/s >= 0.6x that TPS.

Beside each ratio it prints the client's CPU per step (this process's user + system time,
from ``time.process_time`` in the driver, divided by the steps) and the rest of the wall
time per step, which is waiting: for the server (statements, commit, WAL flush) or for the
CPU, when other processes hold it. On a shared machine the wall-clock ratios swing with
the load (pgbench itself does); the CPU per step is the steadier figure to compare
branches with. Interleave rounds of two branches rather than trusting one round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import pg

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.6
SIZE = 4


def _engine(mode: str, runs: int, url: str) -> dict[str, Any]:
    """One case of ``benchmarks.peers.sayiir_run`` in a fresh process; its JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.peers.sayiir_run", "--workload", "linear"]
    cmd += ["--size", str(SIZE), "--runs", str(runs), "--mode", mode, "--url", url]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("status") != "ok":
        raise RuntimeError(f"{mode}: {result}")
    return result


def _round(kind: str, runs: int, seconds: int) -> dict[str, float]:
    clients, mode = (1, "postgres") if kind == "serial" else (4, "postgres-many")
    bench = pg.pgbench(clients, seconds)
    if bench.get("status") != "ok":
        raise RuntimeError(f"pgbench -c {clients}: {bench}")
    with pg.fresh_database(f"ratio_{kind}") as url:
        result = _engine(mode, runs, url)
    steps_s = result["tasks"] / result["seconds"]
    wall_us = 1e6 / steps_s
    cpu_us = float(result["client_cpu_us_per_step"])
    return {
        "pgbench_tps": float(bench["tps"]),
        "steps_s": steps_s,
        "ratio": steps_s / float(bench["tps"]),
        "wall_us": wall_us,
        "cpu_us": cpu_us,
        "wait_us": max(0.0, wall_us - cpu_us),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_ratio", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("serial", "many"), action="append")
    parser.add_argument("--seconds", type=int, default=10, help="pgbench duration per round")
    parser.add_argument("--serial-runs", type=int, default=500, help="runs of 4 steps")
    parser.add_argument("--many-runs", type=int, default=2000, help="runs of 4 steps")
    args = parser.parse_args(argv)
    why = pg.unavailable()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    kinds = args.only or ["serial", "many"]
    runs = {"serial": args.serial_runs, "many": args.many_runs}
    label = {"serial": "item 3: serial vs pgbench -c 1", "many": "item 4: many vs pgbench -c 4"}
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    head = f"{'round':>5} {'pgbench tps':>12} {'steps/s':>9} {'ratio':>6} "
    head += f"{'wall us/step':>12} {'client cpu us':>13} {'wait us':>8}"
    for n in range(1, args.rounds + 1):
        for kind in kinds:
            row = _round(kind, runs[kind], args.seconds)
            rows[kind].append(row)
            print(
                f"[{label[kind]}] {n:>3} {row['pgbench_tps']:>12,.0f} {row['steps_s']:>9,.0f} "
                f"{row['ratio']:>5.2f}x {row['wall_us']:>12,.0f} {row['cpu_us']:>13,.0f} "
                f"{row['wait_us']:>8,.0f}",
                flush=True,
            )
    print()
    print(f"{'':<32}{head}")
    for kind in kinds:
        for n, row in enumerate(rows[kind], 1):
            print(
                f"{label[kind]:<32}{n:>5} {row['pgbench_tps']:>12,.0f} {row['steps_s']:>9,.0f} "
                f"{row['ratio']:>5.2f}x {row['wall_us']:>12,.0f} {row['cpu_us']:>13,.0f} "
                f"{row['wait_us']:>8,.0f}"
            )
        ratios = [r["ratio"] for r in rows[kind]]
        cpu = statistics.median(r["cpu_us"] for r in rows[kind])
        met = sum(r >= TARGET for r in ratios)
        print(
            f"{label[kind]:<32}  median ratio {statistics.median(ratios):.2f}x, "
            f"{met}/{len(ratios)} rounds >= {TARGET}x, median client CPU {cpu:,.0f} us/step"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
