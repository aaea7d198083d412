"""``--profile``: cProfile of our engine on the 4-step linear workload, split per step.

Each mode runs in its own process (``python -m benchmarks.profiling --mode ...``), writes
``benchmarks/results/profile-<mode>.prof`` (open with ``python -m pstats`` or snakeviz) and
prints the split of wall time per step into:

* engine   - sayiir's planner, drivers, records, context (``sayiir/`` minus the rest)
* codec    - ``sayiir/core/codec*`` and the ``json`` module
* database - client-side storage code: the backends (``sayiir/backends``, including the
  in-memory one) and psycopg's Python code (query preparation, adaptation)
* db_wait  - waiting for the database: psycopg's ``wait`` (server round trip and commit,
  fsync included), socket polls, and sqlite3's ``execute``/``commit`` (SQLite does its
  work, fsync included, inside those calls)
* tasks    - the workload's own task bodies
* other    - what is left: the profiled loop itself, and calls that no part made

C builtins and standard-library helpers (``dict.get``, ``re``, ``contextlib``...) count for
the part that called them.

cProfile adds a fixed cost per Python call, so the split is a guide to where the time goes,
not an exact account; the unprofiled µs/step is in the main table.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("engine", "codec", "database", "db_wait", "tasks", "other")
_WAIT_WORDS = ("sqlite3.Cursor", "sqlite3.Connection", "wait_c", "select", "poll", "recv")
_DB_WORDS = ("sqlite3", "psycopg", "socket", "send", "_ssl")


def classify(filename: str, name: str) -> str:
    path = filename.replace("\\", "/")
    if path == "~":  # C functions: classify by their qualified name
        if any(w in name for w in _WAIT_WORDS):
            return "db_wait"
        if any(w in name for w in _DB_WORDS):
            return "database"
        return "codec" if "json" in name else "other"
    if "psycopg" in path and name.startswith("wait"):
        return "db_wait"
    if "/sayiir/core/codec" in path or "/json/" in path:
        return "codec"
    if "/sayiir/backends/" in path or "psycopg" in path or "/sqlite3/" in path:
        return "database"
    if "/sayiir/" in path:
        return "engine"
    if path.endswith(("benchmarks/shapes.py", "benchmarks/workloads.py")):
        return "tasks"
    return "other"


Func = tuple[str, int, str]


def _shares(
    stats: dict[Func, Any], func: Func, memo: dict[Func, dict[str, float]]
) -> dict[str, float]:
    """How ``func``'s own time divides between the parts.

    sayiir, the backends, the drivers and the task bodies are classified by file. Anything
    else (C builtins, ``re``, ``contextlib``, ...) is charged to whoever called it, in
    proportion to the time spent in it from each caller.
    """
    if func in memo:
        return memo[func]
    part = classify(func[0], func[2])
    if part != "other" or not stats[func][4]:
        memo[func] = {part: 1.0}
        return memo[func]
    memo[func] = {"other": 1.0}  # recursion guard
    callers = stats[func][4]
    total = sum(row[2] for row in callers.values()) or 1.0
    mix: dict[str, float] = {}
    for caller, row in callers.items():
        if caller not in stats:
            continue
        for name, weight in _shares(stats, caller, memo).items():
            mix[name] = mix.get(name, 0.0) + weight * row[2] / total
    memo[func] = mix or {"other": 1.0}
    return memo[func]


def split(stats: pstats.Stats, steps: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Own time per part and the top functions, in µs per step."""
    raw: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
    parts = dict.fromkeys(PARTS, 0.0)
    memo: dict[Func, dict[str, float]] = {}
    funcs = []
    for func, row in raw.items():
        own = row[2]
        for name, weight in _shares(raw, func, memo).items():
            parts[name] += own * weight
        filename, line, name = func
        short = f"{Path(filename).name}:{line}:{name}" if filename != "~" else name
        funcs.append((short, own))
    funcs.sort(key=lambda f: f[1], reverse=True)
    per_step = {k: round(v / steps * 1e6, 2) for k, v in parts.items()}
    return per_step, [(n, round(t / steps * 1e6, 2)) for n, t in funcs[:15]]


def profile_mode(mode: str, runs: int, url: str, path: str) -> dict[str, Any]:
    from benchmarks.workloads import build
    from sayiir import InMemoryBackend, run_durable_workflow

    if mode == "postgres":
        from sayiir import PostgresBackend

        backend: Any = PostgresBackend(url)
    elif mode == "sqlite":
        from sayiir import SqliteBackend

        backend = SqliteBackend(path)
    else:
        backend = InMemoryBackend()
    wf = build("linear", 4)
    tag = f"p-{os.getpid()}"
    for i in range(20):
        run_durable_workflow(wf, f"{tag}-w{i}", i, backend=backend)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(runs):
        run_durable_workflow(wf, f"{tag}-{i}", i, backend=backend)
    prof.disable()
    elapsed = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{mode}.prof"
    prof.dump_stats(out)
    steps = runs * 4
    by_part, top = split(pstats.Stats(prof), steps)
    return {
        "mode": mode,
        "status": "ok",
        "runs": runs,
        "us_per_step": round(elapsed / steps * 1e6, 2),
        "us_per_step_by_part": by_part,
        "top": top,
        "prof": str(out.relative_to(RESULTS.parent.parent)),
    }


def run_all(quick: bool, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Profile durable-memory, sqlite and postgres in subprocesses (fresh database each)."""
    from benchmarks import pg

    plans = {"durable-memory": 500 if quick else 5000, "sqlite": 50 if quick else 500}
    plans["postgres"] = 50 if quick else 500
    env = {**os.environ, "PYTHONPATH": str(RESULTS.parent.parent)}
    out = []
    for mode, runs in plans.items():
        if mode == "postgres" and pg.unavailable():
            out.append({"mode": mode, "status": "n/a", "reason": pg.unavailable()})
            continue
        with pg.fresh_database(f"profile_{mode}") as url:
            db = RESULTS / f"profile-{mode}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "benchmarks.profiling", "--mode", mode]
            cmd += ["--runs", str(runs), "--url", url, "--path", str(db)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            out.append({"mode": mode, "status": "error", "reason": tail[:200]})
        else:
            out.append(json.loads(lines[-1]))
        log(f"profile {mode}: {out[-1].get('us_per_step_by_part', out[-1].get('reason'))}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["durable-memory", "sqlite", "postgres"], required=True)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--path", default="/tmp/sayiir-profile.db")
    args = parser.parse_args(argv)
    print(json.dumps(profile_mode(args.mode, args.runs, args.url, args.path)), flush=True)


if __name__ == "__main__":
    main()
