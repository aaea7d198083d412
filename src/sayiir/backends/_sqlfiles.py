"""SQL kept in ``.sql`` files inside the package: named queries and numbered migrations.

Both SQL backends use this loader, so queries are never scattered as strings in
Python code and migrations are plain files a DBA can read.

Query files hold blocks headed ``-- name: <query_name>``; migration files are
named ``NNNN_description.sql`` and may start with ``-- sayiir: no-transaction``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations", "load_queries"]

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change; ``checksum`` detects a file edited after release."""

    version: int
    name: str
    sql: str
    checksum: str
    transactional: bool


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """``{name: sql}`` from a query file of ``package``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in {package}/{filename}")
        queries[name] = body.strip()
    return queries


def load_migrations(package: str) -> list[Migration]:
    """Every ``NNNN_*.sql`` of ``package`` in version order; a repeated number is an error.

    Numbers may have gaps: features developed side by side reserve theirs, and a database is
    migrated by the set of versions it lacks, not by a count.
    """
    out: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if not match:
            continue
        sql = entry.read_text(encoding="utf-8")
        out.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                sql=sql,
                checksum=hashlib.sha256(sql.encode()).hexdigest(),
                transactional="-- sayiir: no-transaction" not in sql,
            )
        )
    out.sort(key=lambda m: m.version)
    # Numbers are reserved per feature, so gaps are allowed (each is applied by the set of
    # versions a database lacks); a number used twice is an error.
    for before, after in itertools.pairwise(out):
        if before.version == after.version:
            raise ValueError(
                f"migrations of {package} share version {after.version:04d}: "
                f"{before.name}.sql and {after.name}.sql"
            )
    if out and out[0].version < 1:
        raise ValueError(f"migrations of {package} start at 0001, not {out[0].version:04d}")
    return out
