"""PostgreSQL storage: ``PostgresBackend`` (needs ``pip install sayiir[postgres]``).

Importing this package does not import psycopg; the backend loads it on first use.
"""

from __future__ import annotations

from sayiir.backends.postgres._backend import AsyncPostgresStorage, PostgresBackend

__all__ = ["AsyncPostgresStorage", "PostgresBackend"]
