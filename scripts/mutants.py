"""Inject known critical bugs one at a time into a copy of the repo; report the survivors.

Each mutant is a realistic bug (most were found in the wild or by review): one exact text
replacement in one file, and the tests that must catch it. For each, the copy gets the
change, pytest runs only those tests (``-x``, stopping at the first failure), and the file
is restored. A mutant whose tests still pass *survived*: the suite misses that bug. A
mutant whose text is no longer in the file is reported *stale* (the list must follow the
code). Run through ``scripts/mutants``; grow the list when a bug is found in the wild.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repo root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: the covering tests


D = "tests/distributed/"
E = "tests/engine/"
B = "tests/backends/"
C = "tests/contract/"
INTERP = "src/sayiir/engine/_interpreter.py"
RUNS = "src/sayiir/engine/_runs.py"
WORKER = "src/sayiir/distributed/worker.py"
PGSQL = "src/sayiir/backends/postgres/queries.sql"
SQLITE_SQL = "src/sayiir/backends/sqlite/queries.sql"

MUTANTS: tuple[Mutant, ...] = (
    # -- workers ---------------------------------------------------------------------------
    Mutant(
        "worker-never-registers-claim-with-heartbeat",
        WORKER,
        "            self._active[key] = mode\n",
        "            pass\n",
        (
            D + "test_claim_races.py::"
            "test_a_task_longer_than_its_lease_keeps_its_claim_and_runs_once",
        ),
    ),
    Mutant(
        "worker-heartbeat-slower-than-lease",
        WORKER,
        "interval = max(self.worker.claim_ttl / 3.0, 0.05)",
        "interval = max(self.worker.claim_ttl * 1.5, 0.05)",
        (
            D + "test_claim_races.py::"
            "test_a_task_longer_than_its_lease_keeps_its_claim_and_runs_once",
        ),
    ),
    Mutant(
        "worker-ignores-shutdown-between-steps",
        WORKER,
        "claim, self.worker.claim_ttl, self._stopping.is_set, frozenset(self.worker.tags)",
        "claim, self.worker.claim_ttl, lambda: False, frozenset(self.worker.tags)",
        (
            D + "test_worker_inprocess.py::"
            "test_shutdown_lets_the_running_task_finish_and_leaves_the_rest_queued",
        ),
    ),
    Mutant(
        "worker-idle-sleep-ignores-next-due",
        WORKER,
        "            wait = min(wait, max(due, 0.0) + _DUE_MARGIN)\n",
        "            pass\n",
        (
            D + "test_worker_inprocess.py::"
            "test_an_idle_worker_wakes_when_a_timer_falls_due_not_at_its_next_poll",
        ),
    ),
    # -- run operations (engine/_runs.py) ----------------------------------------------------
    Mutant(
        "claim-released-before-final-status-unfenced-finish",
        RUNS,
        """    if held is not None:
        kept, _ = yield Store("advance", held, pending, final=final, enqueue=worker.drain(),
                              lease_secs=worker.lease_secs)  # fmt: skip
    else:
        kept = yield Store("finish", instance_id, final, pending, token=token)
        yield Store("enqueue", instance_id, worker.drain())
""",
        """    if held is not None:
        yield Store("advance", held, [], release=True, lease_secs=worker.lease_secs)
    kept = yield Store("finish", instance_id, final, pending, token=token)
    yield Store("enqueue", instance_id, worker.drain())
""",
        (
            D + "test_claim_races.py::"
            "test_a_worker_killed_between_any_two_writes_leaves_a_run_others_finish",
        ),
    ),
    Mutant(
        "join-decision-claim-released-before-reread",
        RUNS,
        '    _, kept = yield Store("advance", held, pending, enqueue=items, lease_secs=lease)\n'
        "    return kept\n",
        '    yield Store("advance", held, pending, enqueue=items, release=True, lease_secs=lease)\n'
        "    return None\n",
        (
            D + "test_worker_inprocess.py::"
            "test_a_worker_killed_before_deciding_on_the_join_leaves_its_claim_to_expire",
        ),
    ),
    Mutant(
        "join-never-decided-after-reread",
        RUNS,
        "if state is None or set(state.checkpoints) <= known:",
        "if True:",
        (
            D + "test_claim_races.py::"
            "test_two_workers_finishing_the_last_branches_at_once_both_re_read_and_queue_the_join",
        ),
    ),
    Mutant(
        # Since execution leases, resume_run's own PAUSED guard is backed by take_over's
        # status filter (a resume of a paused run takes nothing over): mutate the storage side.
        "take-over-of-a-paused-run",
        "src/sayiir/backends/memory.py",
        "if rec.token != token or rec.status not in ACTIVE or live:",
        "if rec.token != token or rec.status in TERMINAL or live:",
        (
            C + "test_storage_contract.py::"
            "test_take_over_leaves_finished_and_paused_runs_alone[memory-paused]",
        ),
    ),
    Mutant(
        "take-over-ignores-a-live-lease-memory",
        "src/sayiir/backends/memory.py",
        "if rec.token != token or rec.status not in ACTIVE or live:",
        "if rec.token != token or rec.status not in ACTIVE:",
        (E + "test_one_execution.py::test_two_concurrent_resumes_run_each_task_once[memory]",),
    ),
    Mutant(
        "take-over-ignores-a-live-lease-sqlite",
        SQLITE_SQL,
        "  AND status IN ('running', 'waiting', 'awaiting_signal')\n"
        "  AND (lease_until IS NULL OR lease_until <= :now)\n",
        "  AND status IN ('running', 'waiting', 'awaiting_signal')\n",
        (E + "test_one_execution.py::test_a_long_task_keeps_its_run_by_heartbeat[sqlite]",),
    ),
    Mutant(
        "take-over-ignores-a-live-lease-postgres",
        PGSQL,
        "  AND (i.lease_until IS NULL OR i.lease_until <= now())\n",
        "",
        (E + "test_one_execution.py::test_a_long_task_keeps_its_run_by_heartbeat[postgres]",),
    ),
    # -- interpreter -------------------------------------------------------------------------
    Mutant(
        "path-continues-though-another-worker-holds-next-task",
        INTERP,
        "        if worker.claim is None:  # someone else holds that task already\n"
        "            raise _Suspended\n",
        "",
        (
            D + "test_claim_races.py::"
            "test_a_wake_up_while_a_task_runs_elsewhere_does_not_run_it_again",
        ),
    ),
    Mutant(
        "continue-claim-shortcut-on-a-run-in-progress",
        INTERP,
        "            and not self.checkpoints\n",
        "",
        (
            D + "test_claim_races.py::"
            "test_a_wake_up_after_the_branches_does_not_run_a_join_another_worker_holds",
        ),
    ),
    Mutant(
        "replay-reruns-checkpointed-tasks",
        INTERP,
        """        stored = self.checkpoints.get(key)
        if stored is not None:
            return self._decode(stored, key)
        fn = self._lookup(node.id)""",
        """        fn = self._lookup(node.id)""",
        (E + "test_crash.py",),
    ),
    Mutant(
        "one-retry-too-many",
        INTERP,
        "            error = result.text or describe(result.error)\n"
        "            if failures > max_retries:",
        "            error = result.text or describe(result.error)\n"
        "            if failures > max_retries + 1:",
        (E + "test_retries_timeouts.py",),
    ),
    Mutant(
        "loop-runs-one-iteration-too-many",
        INTERP,
        "for i in range(node.max_iterations):",
        "for i in range(node.max_iterations + 1):",
        (E + "test_loop.py",),
    ),
    Mutant(
        "route-ignores-default-branch",
        INTERP,
        "chosen = dict(node.branches).get(key, node.default)",
        "chosen = dict(node.branches).get(key)",
        (E + "test_route.py",),
    ),
    Mutant(
        "cancel-during-backoff-not-obeyed",
        INTERP,
        "                if request is not None:\n"
        "                    raise _Stopped(request)\n"
        "\n"
        "    def _call(",
        "                pass\n\n    def _call(",
        (
            E + "test_retry_schedule.py::"
            "test_a_cancel_asked_for_during_a_backoff_stops_the_run_before_the_next_attempt",
        ),
    ),
    # -- retry policy (core) -----------------------------------------------------------------
    Mutant(
        "retry-delay-exponent-off-by-one",
        "src/sayiir/core/metadata.py",
        "self.backoff_multiplier ** (retry - 1)",
        "self.backoff_multiplier ** retry",
        (E + "test_retry_schedule.py", "src/sayiir/core/metadata.py"),
    ),
    # -- codec -------------------------------------------------------------------------------
    Mutant(
        "codec-user-dict-with-tag-key-not-escaped",
        "src/sayiir/core/codec.py",
        """        if _TAG in x:
            return {_TAG: "dict", "v": [[_json_key(k), _escape(v)] for k, v in x.items()]}
""",
        "",
        ("tests/unit/test_codec.py",),
    ),
    Mutant(
        "codec-timedelta-drops-microseconds",
        "src/sayiir/core/codec.py",
        '"v": [o.days, o.seconds, o.microseconds]}',
        '"v": [o.days, o.seconds, 0]}',
        ("tests/unit/test_codec.py",),
    ),
    # -- in-memory backend -------------------------------------------------------------------
    Mutant(
        "memory-fence-ignores-attempt",
        "src/sayiir/backends/memory.py",
        "if entry is None or entry.attempt != claim.attempt or entry.worker_id != claim.worker_id:",
        "if entry is None or entry.worker_id != claim.worker_id:",
        (D + "test_claim_races.py::test_a_stale_claim_of_the_same_worker_cannot_write",),
    ),
    Mutant(
        "memory-next-item-takes-another-workers-entry",
        "src/sayiir/backends/memory.py",
        "elif entry.worker_id is not None or entry.attempt or entry.available_at > now:",
        "elif entry.available_at > now:",
        (
            C + "test_queue_contract.py::"
            "test_next_item_keeps_the_claim_when_its_key_is_checkpointed_or_not_free",
        ),
    ),
    Mutant(
        "memory-run-token-fence-removed",
        "src/sayiir/backends/memory.py",
        """        if token is not None and stored is not None and stored != token:
            raise RunReplacedError(instance_id)""",
        """        pass""",
        (E + "test_edges.py::test_a_replaced_run_cannot_finish_into_the_new_one",),
    ),
    # -- SQLite ------------------------------------------------------------------------------
    Mutant(
        "sqlite-run-token-fence-removed",
        "src/sayiir/backends/sqlite/_backend.py",
        """    if token is not None and stored is not None and stored != token:
        raise RunReplacedError(instance_id)""",
        """    pass""",
        (E + "test_edges.py::test_a_replaced_run_cannot_finish_into_the_new_one",),
    ),
    Mutant(
        "sqlite-store-request-replaces-pending-cancel",
        SQLITE_SQL,
        "WHERE instance_id = :instance_id AND request_kind IS NOT 'cancel'",
        "WHERE instance_id = :instance_id",
        (C + "test_storage_contract.py", E + "test_control.py"),
    ),
    Mutant(
        "sqlite-open-attempts-include-checkpointed-tasks",
        SQLITE_SQL,
        """  AND t.status IN ('running', 'failed')
  AND NOT EXISTS (
      SELECT 1 FROM sayiir_checkpoints AS c
      WHERE c.instance_id = t.instance_id AND c.key = t.key
  )""",
        """  AND t.status IN ('running', 'failed')""",
        (C + "test_storage_contract.py", E + "test_retries_timeouts.py"),
    ),
    # -- PostgreSQL --------------------------------------------------------------------------
    Mutant(
        "postgres-fence-ignores-attempt",
        PGSQL,
        "    WHERE q.instance_id = %(id)s AND q.task_key = %(key)s AND q.attempt = %(attempt)s\n"
        "      AND q.worker_id = %(worker)s AND EXISTS (SELECT FROM lock)",
        "    WHERE q.instance_id = %(id)s AND q.task_key = %(key)s\n"
        "      AND q.worker_id = %(worker)s AND EXISTS (SELECT FROM lock)",
        (D + "test_claim_races.py::test_a_stale_claim_of_the_same_worker_cannot_write",),
    ),
    Mutant(
        "postgres-move-on-a-stale-snapshot",
        PGSQL,
        "    WHERE %(move)s AND EXISTS (SELECT FROM fresh)\n",
        "    WHERE %(move)s\n",
        (
            B + "test_postgres_queue.py::"
            "test_a_move_waiting_for_the_run_lock_never_takes_a_key_checkpointed_meanwhile",
        ),
    ),
    Mutant(
        "postgres-heartbeat-renews-stale-claims",
        PGSQL,
        "WHERE q.instance_id = c.instance_id AND q.task_key = c.task_key AND q.attempt = c.attempt",
        "WHERE q.instance_id = c.instance_id AND q.task_key = c.task_key",
        (D + "test_claim_races.py::test_a_stale_claim_of_the_same_worker_cannot_write",),
    ),
    Mutant(
        "postgres-claim-without-skip-locked",
        PGSQL,
        """            ORDER BY q.available_at
            LIMIT %(n)s
            FOR UPDATE OF q SKIP LOCKED""",
        """            ORDER BY q.available_at
            LIMIT %(n)s
            FOR UPDATE OF q""",
        (B + "test_postgres_claim_locks.py",),
    ),
    Mutant(
        "postgres-expired-claim-walk-without-skip-locked",
        PGSQL,
        """            ORDER BY q.priority, q.available_at
            LIMIT %(n)s
            FOR UPDATE OF q SKIP LOCKED""",
        """            ORDER BY q.priority, q.available_at
            LIMIT %(n)s
            FOR UPDATE OF q""",
        (B + "test_postgres_claim_locks.py",),
    ),
    Mutant(
        "postgres-expired-leases-never-reclaimed",
        PGSQL,
        "WHERE q.worker_id IS NOT NULL AND q.lease_expires_at < now()",
        "WHERE q.worker_id IS NOT NULL AND q.lease_expires_at < now() - interval '1 day'",
        (D + "test_claim_races.py::test_a_stale_claim_of_the_same_worker_cannot_write",),
    ),
    Mutant(
        "postgres-claim-ignores-due-time",
        PGSQL,
        "WHERE q.worker_id IS NULL AND q.priority = p.priority AND q.available_at <= now()",
        "WHERE q.worker_id IS NULL AND q.priority = p.priority",
        (C + "test_queue_contract.py::test_claim_takes_due_entries_only",),
    ),
    Mutant(
        "postgres-claims-entries-of-paused-runs",
        PGSQL,
        "AND i.status IN ('running', 'waiting', 'awaiting_signal')\n\n\n-- Claim up to",
        "AND true\n\n\n-- Claim up to",
        (C + "test_queue_contract.py",),
    ),
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return proc.returncode, proc.stdout + proc.stderr


class Copy:
    """A private copy of src/, tests/ and pyproject.toml that the mutants are applied to."""

    def __init__(self, base: Path) -> None:
        self.root = base
        for part in ("src", "tests"):
            shutil.copytree(ROOT / part, base / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(ROOT / "pyproject.toml", base / "pyproject.toml")
        self.env = {**os.environ, "PYTHONPATH": str(base / "src"), "PYTHONDONTWRITEBYTECODE": "1"}

    def check_import(self) -> None:
        code, out = _run(
            [sys.executable, "-c", "import sayiir; print(sayiir.__file__)"], self.root, self.env, 60
        )
        if code != 0 or not out.strip().startswith(str(self.root)):
            raise SystemExit(f"mutants: the copy's sayiir is not the one imported: {out.strip()}")

    def pytest(self, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p",
               "no:cacheprovider", *tests]  # fmt: skip
        return _run(cmd, self.root, self.env, timeout)

    def apply(self, m: Mutant) -> str | None:
        """Apply ``m``; return the original text, or None when the mutant is stale."""
        target = self.root / m.path
        text = target.read_text()
        if text.count(m.old) != 1:
            return None
        target.write_text(text.replace(m.old, m.new))
        return text

    def restore(self, m: Mutant, original: str) -> None:
        (self.root / m.path).write_text(original)


def _verdict(code: int) -> str:
    return {0: "SURVIVED", 1: "caught"}.get(code, "caught (timeout)" if code == -1 else "ERROR")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="run only mutants whose name contains one")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run at once (1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant (900)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip running the tests unmutated first"
    )
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or any(n in m.name for n in args.names)]
    if args.list or not chosen:
        for m in MUTANTS:
            print(f"{m.name:55} {m.path}")
        return 0 if args.list else 2
    if not os.environ.get("SAYIIR_TEST_POSTGRES_DSN"):
        print("mutants: set SAYIIR_TEST_POSTGRES_DSN: PostgreSQL mutants need their tests to run")
        return 2
    started = time.monotonic()
    jobs = max(1, min(args.jobs, len(chosen)))
    with tempfile.TemporaryDirectory(prefix="sayiir-mutants-") as tmp:
        copies = [Copy(Path(tmp) / f"copy{i}") for i in range(jobs)]
        copies[0].check_import()
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, out = copies[0].pytest(tests, args.timeout * 2)
            if code != 0:
                print(out[-3000:])
                print("mutants: the covering tests fail without any mutant; fix them first")
                return 2
            print(f"baseline: the covering tests pass ({time.monotonic() - started:.0f}s)")
        free = list(copies)

        def run_one(m: Mutant) -> tuple[Mutant, str, float, str]:
            copy = free.pop()
            t0 = time.monotonic()
            try:
                original = copy.apply(m)
                if original is None:
                    return m, "STALE", 0.0, f"text not found once in {m.path}"
                try:
                    code, out = copy.pytest(m.tests, args.timeout)
                finally:
                    copy.restore(m, original)
                return m, _verdict(code), time.monotonic() - t0, out
            finally:
                free.append(copy)

        results = []
        with ThreadPoolExecutor(jobs) as pool:
            for m, verdict, secs, out in pool.map(run_one, chosen):
                results.append((m, verdict))
                print(f"{verdict:17} {secs:6.1f}s  {m.name}", flush=True)
                if verdict in ("SURVIVED", "STALE", "ERROR"):
                    print("    " + "\n    ".join(out.strip().splitlines()[-5:]))
    bad = [m.name for m, v in results if v in ("SURVIVED", "STALE", "ERROR")]
    total = time.monotonic() - started
    print(
        f"\n{len(results) - len(bad)}/{len(results)} mutants caught in {total:.0f}s"
        + (f"; not caught: {', '.join(bad)}" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
