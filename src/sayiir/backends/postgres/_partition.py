"""The partitioned layout: runs, task executions and checkpoints by month of creation.

Opt-in (``PostgresBackend(url, partition="month")``, ``sayiir partition URL``). The work is
done by the functions of migration 0008, so that a conversion is one transaction of the
server (all or nothing) and partition names are composed there with ``format('%I')``; this
module only decides when to call them:

* on open, the layout is read from the catalog (every process then compiles its queries for
  it, whatever its ``partition=``); a backend asking for ``"month"`` on plain tables gets an
  error naming the command that converts them, unless the tables were created by this very
  open (then they are converted at once, empty);
* on open (when the backend may change the schema) and on retention, the months up to
  ``MONTHS_AHEAD`` after the current one are created (rows of a month without a partition
  land in the default partition, still found, only not dropped as a whole);
* retention drops each month that ended before the cutoff, moving its stragglers (runs not
  finished, or finished since the cutoff) to the default partition first; a month with more
  than ``MAX_STRAGGLERS`` of them is left to the row deletes instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sayiir.backends.postgres._migrations import migrate_command
from sayiir.backends.postgres._names import migration_lock_key
from sayiir.backends.postgres._ops import Op, Q
from sayiir.errors import BackendError

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = [
    "MAX_STRAGGLERS",
    "MONTHS_AHEAD",
    "check_partition",
    "convert",
    "drop_months",
    "partition_command",
    "setup",
]

MONTHS_AHEAD = 3
MAX_STRAGGLERS = 10_000
_CHOICES = ("month",)


def check_partition(value: object) -> bool:
    """Whether ``partition=value`` asks for the partitioned layout; refuse anything else.

    >>> check_partition("month"), check_partition(None)
    (True, False)
    """
    if value is None:
        return False
    if isinstance(value, str) and value in _CHOICES:
        return True
    raise ValueError(
        f'partition={value!r} is not supported: use partition="month" (runs, task '
        "executions and checkpoints range-partitioned by month of creation; see "
        "docs/postgres.md, Partitioning) or leave it out for the plain layout"
    )


def partition_command(schema: str, table_prefix: str) -> str:
    """The CLI line that converts the tables of this schema and prefix."""
    return migrate_command(schema, table_prefix, "partition")


def layout(schema: str, table_prefix: str) -> Op[bool | None]:
    """Whether the runs' table is partitioned (``None``: there is none yet)."""
    rows = yield Q(
        "partition_layout",
        {"schema": schema, "table": table_prefix + "workflow_instances"},
        prepare=False,
    )
    return None if not rows else rows[0][0] == "p"


def convert(schema: str, table_prefix: str) -> Op[bool]:
    """Convert the tables (migrated already) in one transaction, under the migration lock
    (a migrator or another conversion waits); ``False`` when they were partitioned."""
    yield Q("begin", prepare=False)
    yield Q("migration_lock", {"key": migration_lock_key(schema, table_prefix)}, prepare=False)
    rows = yield Q("partition_convert", {"ahead": MONTHS_AHEAD}, prepare=False)
    yield Q("commit", prepare=False)
    return bool(rows[0][0])


def setup(
    schema: str, table_prefix: str, want: bool, fresh: bool, ddl: bool, where: str
) -> Op[bool]:
    """After the migrations: the layout to compile the queries for.

    ``want``: the backend asked for ``partition="month"``; ``fresh``: this open created the
    tables; ``ddl``: it may change the schema (``auto_migrate``).
    """
    partitioned = bool((yield from layout(schema, table_prefix)))
    if want and not partitioned:
        if not (fresh and ddl):
            raise BackendError(
                f'partition="month": the tables at {where} are not partitioned. Convert them '
                f"once with `{partition_command(schema, table_prefix)}` (one transaction; "
                "stop the workers first), or leave partition= out to use them as they are"
            )
        yield from convert(schema, table_prefix)
        partitioned = True
    if partitioned and ddl:
        yield Q("partition_ensure", {"ahead": MONTHS_AHEAD}, prepare=False)
    return partitioned


def drop_months(runner: Runner, cutoff: float, progress: Callable[[int], None] | None) -> int:
    """Drop the months that ended before ``cutoff`` and create those ahead; return how many
    runs went with them."""
    rows = runner.run(
        "delete_finished", lambda resent: _one("partition_drop", cutoff=cutoff, most=MAX_STRAGGLERS)
    )
    counts: list[int] = rows[0][0]  # (runs dropped, months dropped, months kept)
    dropped = int(counts[0])
    if progress is not None and dropped:
        progress(dropped)
    runner.run("delete_finished", lambda resent: _one("partition_ensure", ahead=MONTHS_AHEAD))
    return dropped


def _one(name: str, **params: object) -> Op[list[tuple[Any, ...]]]:
    rows = yield Q(name, dict(params), prepare=False)
    return rows
