"""The embedded SQLite backend: one file, one machine, several processes (see docs/sqlite.md)."""

from __future__ import annotations

from sayiir.backends.sqlite._backend import SqliteBackend

__all__ = ["SqliteBackend"]
