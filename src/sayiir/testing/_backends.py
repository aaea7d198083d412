"""Open a backend from a URL (the child-process helper and ``sayiir history`` need one)."""

from __future__ import annotations

from typing import Any

__all__ = ["open_backend"]


def open_backend(url: str) -> Any:
    """``postgresql://...`` -> ``PostgresBackend``; ``sqlite:///path`` or a file path ->
    ``SqliteBackend``. (An ``InMemoryBackend`` lives in one process only.)

    >>> open_backend("sqlite:///tmp/runs.db")  # doctest: +SKIP
    SqliteBackend('/tmp/runs.db')
    """
    if url.startswith(("postgresql://", "postgres://")):
        from sayiir.backends.postgres import PostgresBackend

        return PostgresBackend(url)
    if url.startswith("memory:"):
        raise ValueError(
            "an in-memory backend cannot be opened from another process: use sqlite:///PATH "
            "or postgresql://..."
        )
    from sayiir.backends.sqlite import SqliteBackend

    path = url[len("sqlite://") :] if url.startswith("sqlite://") else url
    if not path:
        raise ValueError(f"no database path in {url!r}: use sqlite:///PATH")
    return SqliteBackend(path)
