"""What each engine's commits survive: the settings behind "durable" in every figure.

A faster engine that syncs less is not faster, so every run records, next to its numbers:

* SQLite, per engine: ``journal_mode`` and ``synchronous`` as read on the connection the
  engine uses (ours) or on a fresh connection of the same library when the engine never sets
  them (DBOS: its connections keep the library default). ``FULL`` syncs the log at every
  commit: a committed step survives a power cut; ``NORMAL`` in WAL mode survives a crash or a
  ``kill -9`` but may lose the last commits on power loss.
* PostgreSQL, once per run: the server's ``synchronous_commit``, ``fsync`` and
  ``wal_sync_method``. No engine here changes them per session or per transaction (their
  sources and binaries contain no ``synchronous_commit``), so the server's values hold for
  all of them.

Standard library only (``postgres`` imports psycopg lazily; only the orchestrator calls it).
"""

from __future__ import annotations

import sqlite3
from typing import Any

_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
PG_SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method")


def sqlite(conn: sqlite3.Connection) -> dict[str, str]:
    """``journal_mode`` and ``synchronous`` of ``conn``."""
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    return {"journal_mode": str(mode).upper(), "synchronous": _SYNCHRONOUS.get(sync, str(sync))}


def sqlite_file(path: str) -> dict[str, str]:
    """The settings a fresh connection to ``path`` gets (an engine that sets none has these)."""
    conn = sqlite3.connect(path)
    try:
        return sqlite(conn)
    finally:
        conn.close()


def use_wal(path: str) -> None:
    """Put the file in WAL mode (persistent: every later connection uses it)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def postgres(url: str) -> dict[str, Any]:
    """The server's commit durability settings (``{"status": ...}`` when unreachable)."""
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            found = {name: conn.execute(f"SHOW {name}").fetchone() for name in PG_SETTINGS}
    except Exception as exc:
        return {"status": f"unavailable: {type(exc).__name__}"}
    return {name: None if row is None else str(row[0]) for name, row in found.items()}


def describe(settings: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())
