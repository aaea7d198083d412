"""Runs every case in its own subprocess, in the engine's own venv, on its own database.

PostgreSQL cases get a fresh database (created before, dropped after); SQLite cases a
fresh file. Peak RSS is the largest resident set of the case's process tree (the driver
and, in worker mode, its worker processes), from ``os.wait4``; the database server's own
memory is not included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import pg, venvs
from benchmarks.metrics import throughput, worker_metrics
from benchmarks.plan import OPEN_LOOP_RATE, Case, worker_count

REPO = Path(__file__).resolve().parent.parent
WORKER_POLL_SECONDS = 0.01
WORKER_CLAIM_TTL_SECONDS = 30.0
REPEAT_BELOW_SECONDS = 3.0


@dataclass
class Context:
    """What every case needs: interpreters per engine, PostgreSQL status, limits."""

    pythons: dict[str, Path | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    pg_missing: str | None = None
    case_timeout: float = 900.0
    stall: float = 30.0
    repeats: int = 3
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sayiir-bench-")))


def prepare(engines: list[str], charts: bool, log: Callable[[str], None]) -> Context:
    """Peer venvs (and matplotlib for the charts) are installed in parallel."""
    ctx = Context()
    ctx.pythons["ours"] = Path(sys.executable)
    peers = [name for name in engines if name != "ours"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = {name: pool.submit(venvs.ensure, name, log) for name in peers}
        if charts:
            from benchmarks.charts import matplotlib_ready

            pool.submit(matplotlib_ready, log)
        for name, job in jobs.items():
            python, reason = job.result()
            ctx.pythons[name] = python
            if python is None:
                ctx.missing[name] = reason
    ctx.pg_missing = pg.unavailable()
    return ctx


def _command(
    case: Case, engine: str, python: Path, where: dict[str, str], ctx: Context
) -> list[str]:
    base = ["--workload", case.workload, "--size", str(case.size), "--runs", str(case.runs)]
    workers = worker_count(case.mode)
    if workers is not None:
        if case.mode.startswith("sqlite"):
            database = ["--backend", "sqlite", "--path", where["path"]]
        else:
            database = ["--url", where["url"]]
        return [
            str(python),
            "-m",
            "benchmarks.peers.sayiir_workers",
            "drive",
            *base,
            "--workers",
            str(workers),
            *database,
            "--workdir",
            where["workdir"],
            "--poll",
            str(WORKER_POLL_SECONDS),
            "--ttl",
            str(WORKER_CLAIM_TTL_SECONDS),
            "--stall",
            str(ctx.stall),
            "--timeout",
            str(ctx.case_timeout - 30),
            *(["--rate", str(OPEN_LOOP_RATE)] if case.mode.endswith("-open") else []),
        ]
    module = "benchmarks.peers.dbos_run" if engine == "dbos" else "benchmarks.peers.sayiir_run"
    cmd = [str(python), "-m", module, *base, "--mode", case.mode]
    if "url" in where:
        cmd += ["--url", where["url"]]
    if "path" in where:
        cmd += ["--path", where["path"]]
    return cmd


def _spawn(cmd: list[str], timeout: float) -> tuple[int, str, str, float]:
    """Run ``cmd``; return its exit status, stdout, stderr and peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env, text=True)
        deadline = time.monotonic() + timeout
        status = None
        while status is None:
            pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rss = os.waitstatus_to_exitcode(raw), usage.ru_maxrss / 1024
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, raw, usage = os.wait4(proc.pid, 0)
                status, rss = -9, usage.ru_maxrss / 1024
                err.write(f"\ntimed out after {timeout:.0f} s")
                break
            time.sleep(0.02)
        proc.returncode = status
        out.seek(0)
        err.seek(0)
        return status, out.read(), err.read(), rss


def _resources(case: Case, engine: str, ctx: Context) -> AbstractContextManager[str | None]:
    if case.mode.startswith("postgres") or case.mode.startswith("workers"):
        return pg.fresh_database(f"{engine}_{case.workload}_{case.mode}")
    return nullcontext(None)


def _skip_reason(case: Case, engine: str, ctx: Context) -> str | None:
    if engine in ctx.missing:
        return ctx.missing[engine]
    needs_pg = case.mode.startswith("postgres") or case.mode.startswith("workers")
    if needs_pg and ctx.pg_missing:
        return ctx.pg_missing
    return None


def run_one(case: Case, engine: str, ctx: Context) -> dict[str, Any]:
    """One case on one engine. A case measured in under ``REPEAT_BELOW_SECONDS`` is run
    ``REPEATS`` times (each on a fresh database) and the median by workflows/s is kept."""
    record: dict[str, Any] = {
        "workload": case.workload,
        "mode": case.mode,
        "size": case.size,
        "runs": case.runs,
        "engine": engine,
        "headline": case.headline,
    }
    reason = _skip_reason(case, engine, ctx)
    if reason is not None:
        return {**record, "status": "n/a", "reason": reason}
    first = {**record, **_attempt(case, engine, ctx)}
    if ctx.repeats <= 1 or first.get("status") != "ok":
        return first
    if first["seconds"] >= REPEAT_BELOW_SECONDS:
        return first
    tries = [first] + [{**record, **_attempt(case, engine, ctx)} for _ in range(ctx.repeats - 1)]
    ok = sorted((t for t in tries if t.get("status") == "ok"), key=lambda t: t["workflows_per_s"])
    chosen = ok[len(ok) // 2]
    chosen["repeats"] = [t["workflows_per_s"] for t in ok]
    return chosen


def _attempt(case: Case, engine: str, ctx: Context) -> dict[str, Any]:
    python = ctx.pythons[engine]
    assert python is not None
    scratch = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=ctx.scratch))
    try:
        with _resources(case, engine, ctx) as url:
            where = {"workdir": str(scratch / "work"), "path": str(scratch / "bench.db")}
            if url is not None:
                where["url"] = url
            cmd = _command(case, engine, python, where, ctx)
            code, out, err, rss = _spawn(cmd, ctx.case_timeout)
            return {"peak_rss_mib": round(rss, 1), **_result(case, code, out, err)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _result(case: Case, code: int, out: str, err: str) -> dict[str, Any]:
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        tail = [line for line in err.strip().splitlines() if line.strip()][-1:] or [f"exit {code}"]
        return {"status": "error", "reason": tail[0][:300]}
    data: dict[str, Any] = json.loads(lines[-1])
    if data.get("status") != "ok":
        return data
    if "workdir" in data:
        workdir = Path(data.pop("workdir"))
        data.update(
            worker_metrics(case.workload, case.size, workdir, data["t_go"], data.get("t_end"))
        )
    else:
        latency = data.pop("latency", {})
        data["e2e_p50_ms"] = latency.get("p50_ms")
        data["e2e_p99_ms"] = latency.get("p99_ms")
    data.update(throughput(data))
    return data
