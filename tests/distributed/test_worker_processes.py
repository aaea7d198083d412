"""Real worker processes over PostgreSQL: drain, crash, stall, stop, park, route.

Workers are started with the real command (``python -m sayiir.cli worker``) and are
really killed (SIGKILL), stopped (SIGSTOP) and terminated (SIGTERM). Tasks write a
ledger line per execution (see workerapp.py); the database tells what was completed.
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sayiir import PostgresBackend
from tests.distributed.processes import WorkerProcesses

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")  # the module the workers serve

pytestmark = pytest.mark.postgres


class Cluster(WorkerProcesses):
    """Worker processes sharing the module's database, and a client to drive them."""

    def __init__(self, dsn: str, ledger: Path) -> None:
        super().__init__(dsn, PostgresBackend(dsn), ledger)
        self.dsn = dsn

    def lines(self) -> list[tuple[str, str, int, str]]:
        if not self.ledger.exists():
            return []
        out = []
        for line in self.ledger.read_text().splitlines():
            instance, task_id, pid, event = line.split()
            out.append((instance, task_id, int(pid), event))
        return out

    def completed_twice(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT instance_id, task_key, count(*) FROM sayiir_task_executions "
                "WHERE status = 'completed' GROUP BY 1, 2 HAVING count(*) > 1"
            ).fetchall()

    def unclaimed_entries(self, instance_id: str) -> list[str]:
        """The task keys of the run's queue entries that no worker holds."""
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT task_key FROM sayiir_task_queue"
                " WHERE instance_id = %s AND worker_id IS NULL ORDER BY task_key",
                (instance_id,),
            ).fetchall()
        return [key for (key,) in rows]


@pytest.fixture
def cluster(pg_dsn: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(pg_dsn, tmp_path / "ledger.txt")
    yield c
    c.close()


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def test_three_workers_drain_fork_runs_each_task_once(cluster: Cluster) -> None:
    runs = [f"fan-{i}" for i in range(24)]
    for i, run in enumerate(runs):
        cluster.client.submit(workerapp.fan, run, i)
    for n in range(3):
        cluster.start(f"w{n}", concurrency=2)
    wait_until(
        lambda: all(cluster.client.status(r).is_completed() for r in runs), 60, "all runs done"
    )
    for i, run in enumerate(runs):
        assert cluster.client.status(run).output == (3 * i + 6) * 10
    executions = Counter((inst, task) for inst, task, _, _ in cluster.lines())
    assert set(executions.values()) == {1}
    assert len(executions) == len(runs) * 6
    # The workers shared the branches. Whether one run's branches end up on several
    # processes depends on timing (a spreading worker whose slots free up first takes its
    # own queued branches, by design): test_two_workers_share_8_branch_forks covers that.
    branch_pids = {pid for _, task, pid, _ in cluster.lines() if "branch" in task}
    assert len(branch_pids) > 1, "one worker ran every branch"
    assert cluster.completed_twice() == []


@pytest.mark.parametrize("kill", [False, True], ids=["both-live", "one-killed"])
def test_two_workers_share_8_branch_forks_and_run_each_branch_once(
    cluster: Cluster, kill: bool
) -> None:
    """30 runs of an 8-branch fork on 2 worker processes: each worker takes the queued
    branches of the forks it spreads in the writes of its checkpoints, while the other one
    claims some of them (a branch sleeps 50 ms). Every run completes with its output; no
    task is run twice, except, in the variant where one worker is SIGKILLed while it runs
    a task, that one task (it had no checkpoint), which the survivor runs again."""
    runs = [f"octet-{'kill' if kill else 'live'}-{i}" for i in range(30)]
    for i, run in enumerate(runs):
        cluster.client.submit(workerapp.octet, run, i)
    workers = [cluster.start(f"o{n}", claim_ttl=1.5) for n in range(2)]
    victim = workers[0].pid
    in_flight: tuple[str, str] | None = None
    if kill:

        def mid_task() -> bool:
            mine = [(inst, t) for inst, t, p, _ in cluster.lines() if p == victim]
            return len(mine) >= 20 and cluster.client.get_task_result(*mine[-1]) is None

        wait_until(mid_task, 60, "the victim runs a task, 20 tasks in")
        os.kill(victim, signal.SIGKILL)
        workers[0].wait(5)
        last = [(inst, t) for inst, t, p, _ in cluster.lines() if p == victim][-1]
        if cluster.client.get_task_result(*last) is None:
            in_flight = last  # killed before its checkpoint: it runs again elsewhere
    wait_until(
        lambda: all(cluster.client.status(r).is_completed() for r in runs), 90, "all runs done"
    )
    for i, run in enumerate(runs):
        assert cluster.client.status(run).output == (8 * i + 28) * 10, run
    lines = [line for line in cluster.lines() if line[0] in runs]
    executions = Counter((inst, task) for inst, task, _, _ in lines)
    assert len(executions) == len(runs) * 11  # begin, 8 branches, gather, finish
    twice = {key: n for key, n in executions.items() if n > 1}
    assert twice == ({} if in_flight is None else {in_flight: 2})
    assert cluster.completed_twice() == []
    pids = {pid for _, task, pid, _ in lines if task.startswith("part_")}
    assert len(pids) >= 2, "the other worker never ran a branch"
    with psycopg.connect(cluster.dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM sayiir_task_queue WHERE instance_id = ANY(%s)", (runs,)
        ).fetchone()
    assert left == (0,)  # finished runs keep no queue entries


def test_kill_9_mid_task_reruns_it_elsewhere(cluster: Cluster) -> None:
    env = {"SAYIIR_TEST_SLOW_SECS": "2"}
    first = cluster.start("a", claim_ttl=1.5, env=env)
    cluster.client.submit(workerapp.sleepy, "crash", 1)
    wait_until(lambda: any(t == "slow" for _, t, _, _ in cluster.lines()), what="slow started")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    second = cluster.start("b", claim_ttl=1.5, env=env)
    wait_until(lambda: cluster.client.status("crash").is_completed(), 30, "run completed")
    slow_events = [(pid, ev) for _, t, pid, ev in cluster.lines() if t == "slow"]
    assert slow_events[0] == (first.pid, "start")
    assert (second.pid, "end") in slow_events and (first.pid, "end") not in slow_events
    assert cluster.client.status("crash").output == {"value": 2, "pid": second.pid}
    assert [t for _, t, _, _ in cluster.lines()].count("begin") == 1  # checkpointed, not redone
    assert cluster.completed_twice() == []


def test_stalled_worker_is_fenced_off_when_it_wakes_up(cluster: Cluster) -> None:
    env = {"SAYIIR_TEST_SLOW_SECS": "2"}
    zombie = cluster.start("zombie", claim_ttl=1.0, env=env)
    cluster.client.submit(workerapp.sleepy, "stall", 1)
    wait_until(lambda: any(t == "slow" for _, t, _, _ in cluster.lines()), what="slow started")
    os.kill(zombie.pid, signal.SIGSTOP)  # no heartbeat: its lease runs out
    healthy = cluster.start("healthy", claim_ttl=5.0, env=env)
    wait_until(
        lambda: any(pid == healthy.pid for _, t, pid, _ in cluster.lines() if t == "slow"),
        what="slow taken over",
    )
    os.kill(zombie.pid, signal.SIGCONT)  # finishes its sleep before the healthy worker
    wait_until(lambda: cluster.client.status("stall").is_completed(), 30, "run completed")
    ends = [pid for _, t, pid, ev in cluster.lines() if t == "slow" and ev == "end"]
    assert zombie.pid in ends and healthy.pid in ends  # both ran it to the end...
    # ...but only the worker holding the current claim wrote its result.
    assert cluster.client.get_task_result("stall", "slow") == {"value": 2, "pid": healthy.pid}
    assert cluster.client.status("stall").output == {"value": 2, "pid": healthy.pid}
    assert cluster.completed_twice() == []


def test_sigterm_finishes_the_running_task_then_exits(cluster: Cluster) -> None:
    env = {"SAYIIR_TEST_SLOW_SECS": "1.5"}
    worker = cluster.start("stopping", env=env)
    cluster.client.submit(workerapp.sleepy, "term", 4)
    wait_until(lambda: any(t == "slow" for _, t, _, _ in cluster.lines()), what="slow started")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert cluster.client.get_task_result("term", "slow") == {"value": 5, "pid": worker.pid}
    assert "after_slow" not in [t for _, t, _, _ in cluster.lines()]
    cluster.start("next")
    wait_until(lambda: cluster.client.status("term").is_completed(), 30, "run completed")
    tasks = Counter(t for _, t, _, ev in cluster.lines() if ev in ("run", "end"))
    assert tasks == {"begin": 1, "slow": 1, "after_slow": 1}


def test_delay_and_signal_with_no_worker_waiting_on_them(cluster: Cluster) -> None:
    cluster.start("w")
    cluster.client.submit(workerapp.parked, "park", 7)
    wait_until(lambda: cluster.client.status("park").is_waiting(), what="waiting")
    wait_until(lambda: cluster.client.status("park").is_awaiting_signal(), what="awaiting signal")
    cluster.client.send_signal("park", "go", 8)
    wait_until(lambda: cluster.client.status("park").is_completed(), what="completed")
    assert cluster.client.status("park").output == 80


def test_tagged_tasks_run_only_on_workers_serving_the_tag(cluster: Cluster) -> None:
    plain = cluster.start("plain")
    cluster.client.submit(workerapp.tagged, "gpu-run", 3)
    wait_until(lambda: cluster.unclaimed_entries("gpu-run") == ["on_gpu"], what="on_gpu queued")
    # A later, less urgent untagged run: the plain worker (one task at a time) takes entries
    # by priority then age, so once it finished this one it has passed over on_gpu.
    cluster.client.submit(workerapp.lazy_flow, "after-gpu", 1)
    wait_until(lambda: cluster.client.status("after-gpu").is_completed(), what="lazy run done")
    assert "on_gpu" not in [t for _, t, _, _ in cluster.lines()]
    assert cluster.unclaimed_entries("gpu-run") == ["on_gpu"]
    gpu = cluster.start("gpu", tags="gpu")
    wait_until(lambda: cluster.client.status("gpu-run").is_completed(), what="completed")
    assert cluster.client.status("gpu-run").output == 6
    ran_on = {t: pid for _, t, pid, _ in cluster.lines()}
    assert ran_on["on_gpu"] == gpu.pid
    assert plain.poll() is None  # the plain worker is still serving


def test_urgent_runs_are_claimed_before_older_lazy_ones(cluster: Cluster) -> None:
    for i in range(5):
        cluster.client.submit(workerapp.lazy_flow, f"lazy-{i}", i)
    for i in range(5):
        cluster.client.submit(workerapp.urgent_flow, f"urgent-{i}", i)
    cluster.start("single", concurrency=1)
    runs = [f"lazy-{i}" for i in range(5)] + [f"urgent-{i}" for i in range(5)]
    wait_until(lambda: all(cluster.client.status(r).is_completed() for r in runs), what="done")
    order = [task_id for _, task_id, _, _ in cluster.lines()]
    assert order == ["urgent"] * 5 + ["lazy"] * 5  # priority 1 first, though submitted last


def test_kill_9_chaos_loses_nothing_and_completes_each_step_once(cluster: Cluster) -> None:
    """R1 (scaled down): three workers, one picked at random is killed with SIGKILL as soon
    as it is seen running a task, and restarted under the same worker id, until three kills
    have landed mid-task (the task had no checkpoint once its process was dead), while
    fork/join runs drain. Every run completes with the right output, no step is checkpointed
    twice, and no step ran more than 3 times (a kill mid-task re-runs it; a checkpointed one
    never is). Kills follow what the workers do, not the wall clock: however slow the
    machine, they land mid-task."""
    seed = int(os.environ.get("SAYIIR_CHAOS_SEED", str(time.time_ns() % 10_000)))
    rnd = random.Random(seed)
    env = {"SAYIIR_TEST_TASK_SECS": "0.15"}  # ~7 s of work for 6 slots: outlasts the chaos
    runs = [f"chaos-{i}" for i in range(90)]
    for i, run in enumerate(runs):
        cluster.client.submit(workerapp.fan, run, i)
    ids = ["c0", "c1", "c2"]
    live = {wid: cluster.start(wid, claim_ttl=1.5, concurrency=2, env=env) for wid in ids}

    def running(pid: int) -> tuple[str, str] | None:
        """The last task process ``pid`` started that has no checkpoint yet."""
        mine = [(inst, t) for inst, t, p, _ in cluster.lines() if p == pid and inst in runs]
        if mine and cluster.client.get_task_result(*mine[-1]) is None:
            return mine[-1]
        return None

    def all_done() -> bool:
        return all(cluster.client.status(r).is_completed() for r in runs)

    kills = mid_task = 0
    while mid_task < 3 and kills < 30:
        victim = rnd.choice(ids)
        pid = live[victim].pid

        def busy(pid: int = pid) -> bool:
            return running(pid) is not None or all_done()

        wait_until(busy, 120, f"{victim} runs a task")
        if all_done():
            break
        os.kill(pid, signal.SIGKILL)
        live[victim].wait(5)
        kills += 1
        noted = [(inst, t) for inst, t, p, _ in cluster.lines() if p == pid]
        if cluster.client.get_task_result(*noted[-1]) is None:  # dead, and never wrote it
            mid_task += 1
        live[victim] = cluster.start(victim, claim_ttl=1.5, concurrency=2, env=env)
    assert mid_task >= 1, f"no kill landed mid-task in {kills} kills (seed {seed})"
    wait_until(
        lambda: all(cluster.client.status(r).is_completed() for r in runs),
        120,
        f"all runs done after {kills} kills (seed {seed})",
    )
    for i, run in enumerate(runs):
        assert cluster.client.status(run).output == (3 * i + 6) * 10, (run, seed)
    assert cluster.completed_twice() == [], seed
    executions = Counter((inst, task) for inst, task, _, _ in cluster.lines() if inst in runs)
    assert len(executions) == len(runs) * 6, seed  # every task of every run ran
    assert max(executions.values()) <= 3, (executions.most_common(3), seed)
    assert sum(executions.values()) > len(executions), seed  # kills did land mid-task
    with psycopg.connect(cluster.dsn) as conn:
        left = conn.execute(
            "SELECT q.instance_id, q.task_key, q.worker_id, q.attempt, q.available_at,"
            " q.created_at, i.status, i.completed_at FROM sayiir_task_queue AS q"
            " JOIN sayiir_workflow_instances AS i USING (instance_id)"
            " WHERE q.instance_id LIKE 'chaos-%'"
        ).fetchall()
    assert left == [], seed  # finished runs keep no queue entries


def test_a_task_three_times_the_lease_runs_once_and_its_lease_is_renewed(cluster: Cluster) -> None:
    """Two workers with a 2 s lease, a task that runs 6 s: the worker running it renews
    its lease all along (the renewals are seen in the queue row), and the other worker
    never takes the task over. (With a 1 s lease, a heartbeat that a loaded machine and
    database delay by a second lets the other worker take over.)"""
    env = {"SAYIIR_TEST_SLOW_SECS": "6"}
    cluster.start("a", claim_ttl=2.0, env=env)
    cluster.start("b", claim_ttl=2.0, env=env)
    cluster.client.submit(workerapp.sleepy, "long", 1)
    wait_until(lambda: any(t == "slow" for _, t, _, _ in cluster.lines()), what="slow started")
    leases: set[Any] = set()
    attempts: set[Any] = set()
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        while not any(t == "slow" and ev == "end" for _, t, _, ev in cluster.lines()):
            for lease, attempt in conn.execute(
                "SELECT lease_expires_at, attempt FROM sayiir_task_queue"
                " WHERE instance_id = 'long' AND worker_id IS NOT NULL"
            ).fetchall():
                leases.add(lease)
                attempts.add(attempt)
            time.sleep(0.05)
    wait_until(lambda: cluster.client.status("long").is_completed(), 30, "run completed")
    starts = [pid for _, t, pid, ev in cluster.lines() if t == "slow" and ev == "start"]
    assert len(starts) == 1, starts
    assert len(leases) >= 3, leases  # renewed (every claim_ttl / 3) while it ran
    assert attempts == {1}  # never taken over
    assert cluster.client.status("long").output == {"value": 2, "pid": starts[0]}
    assert cluster.completed_twice() == []


def test_a_stalled_worker_is_fenced_off_by_its_own_restarted_self(cluster: Cluster) -> None:
    """As the stalled-worker test, but the worker that takes over has the same worker id
    (a restart under a fixed --id): the fence tells the claims apart by attempt number."""
    env = {"SAYIIR_TEST_SLOW_SECS": "2"}
    zombie = cluster.start("same", claim_ttl=1.0, env=env)
    cluster.client.submit(workerapp.sleepy, "stall-same", 1)
    wait_until(lambda: any(t == "slow" for _, t, _, _ in cluster.lines()), what="slow started")
    os.kill(zombie.pid, signal.SIGSTOP)
    healthy = cluster.start("same", claim_ttl=5.0, env=env)
    wait_until(
        lambda: any(pid == healthy.pid for _, t, pid, _ in cluster.lines() if t == "slow"),
        what="slow taken over",
    )
    os.kill(zombie.pid, signal.SIGCONT)
    wait_until(lambda: cluster.client.status("stall-same").is_completed(), 30, "run completed")
    ends = [pid for _, t, pid, ev in cluster.lines() if t == "slow" and ev == "end"]
    assert zombie.pid in ends and healthy.pid in ends
    expected = {"value": 2, "pid": healthy.pid}
    assert cluster.client.get_task_result("stall-same", "slow") == expected
    assert cluster.client.status("stall-same").output == expected
    assert cluster.completed_twice() == []


def test_a_worker_dying_right_after_any_write_leaves_the_run_to_another(cluster: Cluster) -> None:
    """A worker process dies (os._exit) right after its 1st, 2nd, 3rd storage write on a
    two-task run; each time another worker finishes the run once its lease is over. A
    worker that gave its claim up in one write and wrote the final status in another
    would leave, killed in between, a run that nobody can ever finish."""
    for writes in (1, 2, 3):
        run = f"dies-{writes}"
        cluster.client.submit(workerapp.duo, run, writes)
        dying = cluster.start(
            f"dying-{writes}", claim_ttl=1.0, env={"SAYIIR_TEST_EXIT_AFTER_WRITES": str(writes)}
        )
        wait_until(
            lambda: dying.poll() is not None or cluster.client.status(run).is_completed(),  # noqa: B023
            what=f"worker exit after {writes} writes",
        )
        dying.kill()
        dying.wait(10)
        rescuer = cluster.start(f"rescuer-{writes}", claim_ttl=5.0)
        wait_until(
            lambda: cluster.client.status(run).is_completed(),  # noqa: B023
            30,
            f"run completed after a death at write {writes}",
        )
        rescuer.terminate()
        rescuer.wait(15)
        assert cluster.client.status(run).output == writes * 10
    assert cluster.completed_twice() == []


def test_a_worker_dying_right_after_the_write_that_took_its_next_run_leaves_it_to_another(
    cluster: Cluster,
) -> None:
    """The write that ends a run also claims the worker's next one (finish_and_claim). A
    worker killed right after that write holds a run it never started: another worker
    runs it once the lease is over, and the first run is not run again."""
    cluster.client.submit(workerapp.duo, "chain-first", 1)
    cluster.client.submit(workerapp.duo, "chain-next", 2)
    dying = cluster.start("dying-chain", claim_ttl=1.0, env={"SAYIIR_TEST_EXIT_AFTER_WRITES": "2"})
    assert dying.wait(30) == 137  # died right after its 2nd write: chain-first's final one
    assert cluster.client.status("chain-first").output == 10
    with psycopg.connect(cluster.dsn) as conn:
        held = conn.execute(
            "SELECT worker_id, attempt FROM sayiir_task_queue WHERE instance_id = %s",
            ("chain-next",),
        ).fetchall()
    assert held == [("dying-chain", 1)]  # taken by the final write, never started
    rescuer = cluster.start("rescuer-chain", claim_ttl=5.0)
    wait_until(lambda: cluster.client.status("chain-next").is_completed(), 30, "chain-next")
    rescuer.terminate()
    rescuer.wait(15)
    assert cluster.client.status("chain-next").output == 20
    assert cluster.completed_twice() == []


def test_a_signal_sent_while_a_task_runs_does_not_run_it_on_another_worker(
    cluster: Cluster,
) -> None:
    """A signal sent early (while the task before the wait runs on one worker) queues a
    wake-up of the run; the other, idle, worker takes it and must leave the running task
    alone (it ran it a second time, at once, and wrote its checkpoint behind its back)."""
    env = {"SAYIIR_TEST_SLOW_SECS": "2"}
    cluster.start("a", env=env)
    cluster.start("b", env=env)
    wait_until(lambda: listeners(cluster.dsn) >= 2, what="both workers listening")
    cluster.client.submit(workerapp.signalled, "early", 1)
    wait_until(lambda: any(t == "slow" for _, t, _, _ in cluster.lines()), what="slow started")
    cluster.client.send_signal("early", "go", 8)
    wait_until(lambda: cluster.client.status("early").is_completed(), 30, "run completed")
    assert cluster.client.status("early").output == 80
    tasks = Counter(t for _, t, _, ev in cluster.lines() if ev in ("run", "start"))
    assert tasks == {"begin": 1, "slow": 1, "finish": 1}
    assert cluster.completed_twice() == []


def listeners(dsn: str) -> int:
    """Sessions of this database whose last statement was a LISTEN: one per live worker."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).fetchone()
    assert row is not None
    return int(row[0])
