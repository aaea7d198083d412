"""Retention: delete the runs that finished long ago (``sayiir retention``).

The cutoff is taken once, from the database clock, when a call starts. In the partitioned
layout the months that ended before it are dropped whole first (``_partition.drop_months``);
the runs left are then deleted in batches, each batch one statement in its own transaction
(so a long clean-up never holds locks for long, and an outage retries one batch, not all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sayiir.backends.postgres._ops import Op, Q
from sayiir.backends.postgres._options import non_negative
from sayiir.backends.postgres._partition import drop_months
from sayiir.backends.postgres._task_limits import purge_task_limit_rows

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = ["count_finished", "delete_finished"]


def delete_finished(
    runner: Runner,
    older_than_secs: float,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete completed, failed and cancelled runs that ended over ``older_than_secs`` ago,
    ``batch_size`` runs per statement until a batch comes back short; return how many.
    ``progress(n)`` is told each batch's count (the CLI's progress bar)."""
    older = non_negative("older_than_secs", older_than_secs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
    cutoff = runner.run("delete_finished", lambda resent: _cutoff(older))
    total = 0
    if runner.partitioned:  # known once the first call has opened the backend
        total = drop_months(runner, cutoff, progress)
        # The task limits' rows have no foreign key: those of the dropped months' runs.
        runner.run("delete_finished", lambda resent: purge_task_limit_rows())
    while True:
        n = runner.run("delete_finished", lambda resent: _delete_batch(cutoff, batch_size))
        total += n
        if progress is not None:
            progress(n)
        if n < batch_size:
            return total


def count_finished(runner: Runner, older_than_secs: float) -> int:
    """How many runs ``delete_finished(older_than_secs)`` would delete now."""
    older = non_negative("older_than_secs", older_than_secs)
    cutoff = runner.run("count_finished", lambda resent: _cutoff(older))
    return runner.run("count_finished", lambda resent: _count(cutoff))


def _cutoff(older_than_secs: float) -> Op[float]:
    """The database clock minus ``older_than_secs``, as epoch seconds."""
    rows = yield Q("retention_cutoff", {"older_than": float(older_than_secs)})
    return float(rows[0][0])


def _count(cutoff: float) -> Op[int]:
    rows = yield Q("count_finished", {"cutoff": cutoff})
    return int(rows[0][0])


def _delete_batch(cutoff: float, batch_size: int) -> Op[int]:
    """Delete one batch of runs that finished before ``cutoff``; return how many."""
    rows = yield Q("delete_finished", {"cutoff": cutoff, "batch": batch_size})
    return int(rows[0][0])
