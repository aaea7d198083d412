"""PostgreSQL helpers: a fresh database per case, and the ``pgbench`` ceiling."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# A server URL whose role may create databases: $SAYIIR_BENCH_PG, else the test suite's DSN.
ADMIN_URL = (
    os.environ.get("SAYIIR_BENCH_PG")
    or os.environ.get("SAYIIR_TEST_POSTGRES_DSN")
    or "postgresql://postgres@127.0.0.1:5432/postgres"
)
_counter = itertools.count()


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def unavailable(url: str = ADMIN_URL) -> str | None:
    """Why PostgreSQL cannot be used (``None`` when it can)."""
    try:
        with _connect(url) as conn:
            conn.execute("SELECT 1")
    except ImportError:
        return "psycopg is not installed in this venv"
    except Exception as exc:
        return f"PostgreSQL unreachable at {urlsplit(url).hostname}: {type(exc).__name__}"
    return None


def server_version(url: str = ADMIN_URL) -> str:
    try:
        with _connect(url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except Exception:
        return "unavailable"
    return str(row[0]) if row else "?"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def fresh_database(label: str, url: str = ADMIN_URL) -> Iterator[str]:
    """Create ``bench_<label>_<pid>_<n>``, yield its URL, drop it afterwards."""
    from psycopg import sql

    safe = re.sub(r"[^a-z0-9_]", "_", label.lower())[:40]
    name = f"bench_{safe}_{os.getpid()}_{next(_counter)}"
    ident = sql.Identifier(name)
    with _connect(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield with_database(url, name)
    finally:
        with _connect(url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def pgbench(clients: int, seconds: int, url: str = ADMIN_URL) -> dict[str, Any]:
    """``pgbench -N -c <clients>`` for ``seconds`` on a fresh, initialized database."""
    exe = shutil.which("pgbench")
    if exe is None:
        return {"status": "n/a", "reason": "pgbench is not on PATH"}
    with fresh_database(f"pgbench_c{clients}", url) as db:
        init = subprocess.run([exe, "-i", "-q", db], capture_output=True, text=True, check=False)
        if init.returncode != 0:
            return {"status": "error", "reason": init.stderr.strip()[-200:]}
        cmd = [exe, "-N", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1))]
        run = subprocess.run(
            [*cmd, "-T", str(seconds), db], capture_output=True, text=True, check=False
        )
    found = re.search(r"tps = ([0-9.]+)", run.stdout)
    latency = re.search(r"latency average = ([0-9.]+) ms", run.stdout)
    if run.returncode != 0 or found is None:
        return {"status": "error", "reason": (run.stderr or run.stdout).strip()[-200:]}
    return {
        "status": "ok",
        "clients": clients,
        "seconds": seconds,
        "tps": round(float(found.group(1)), 1),
        "latency_ms": float(latency.group(1)) if latency else None,
    }
