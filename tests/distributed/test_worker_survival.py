"""Workers never die silently and never loop forever (in one process, every queue backend).

- a task's ``SystemExit``/``KeyboardInterrupt``/other ``BaseException`` fails the attempt
  (per the retry policy) and the worker goes on serving;
- an error of the worker's own loop stops the whole worker (``handle.running`` false,
  ``handle.error`` set, the traceback logged, ``run()`` raises), never one thread alone;
- a database that stays unusable stops the worker after ``outage_timeout``; a shorter
  outage does not;
- a run whose claims keep ending without an outcome is dead-lettered after
  ``max_claim_attempts``, with the last known cause in its error.

Real worker processes (SIGKILL on every claim, the ``sayiir worker`` command) are in
test_worker_survival_processes.py.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from sayiir import Flow, InMemoryBackend, PostgresBackend, RetryPolicy, WorkflowClient, task
from sayiir.core.records import RunState
from sayiir.errors import BackendError, WorkflowError
from sayiir.worker import Worker

calls: Counter[str] = Counter()
_lock = threading.Lock()


def _count(name: str) -> None:
    with _lock:
        calls[name] += 1


class CustomStop(BaseException):
    """A BaseException of the user's own (as some libraries define)."""


RAISES: dict[str, BaseException] = {
    "SystemExit": SystemExit(3),
    "KeyboardInterrupt": KeyboardInterrupt(),
    "CustomStop": CustomStop("stop right there"),
}


@task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.0))
def exits(kind: str) -> str:
    _count("exits")
    raise RAISES[kind]


@task
def plain(x: int) -> int:
    _count("plain")
    return x + 1


EXITS = Flow("exits").then(exits).build()
PLAIN = Flow("plain").then(plain).build()


@pytest.fixture(autouse=True)
def _clear_calls() -> Iterator[None]:
    calls.clear()
    yield
    calls.clear()


class FaultyLoad:
    """Fault injection: ``load`` of instances named ``poison-*`` raises (an engine error
    that is no outcome: the run can never be read). Mixed into a real backend."""

    loads: Counter[str]
    dsn: str

    def load(self, instance_id: str) -> RunState | None:
        if instance_id.startswith("poison"):
            self.loads[instance_id] += 1
            raise RuntimeError(f"corrupt row for {instance_id}")
        return super().load(instance_id)  # type: ignore[misc, no-any-return]


class FaultyMemory(FaultyLoad, InMemoryBackend):
    pass


class FaultyPostgres(FaultyLoad, PostgresBackend):
    pass


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh queue (with ``load`` faults for ``poison-*`` runs): in memory, or PostgreSQL
    tables with a prefix of their own."""
    b: Any
    if request.param == "memory":
        b = FaultyMemory()
    else:
        dsn = request.getfixturevalue("pg_dsn")
        b = FaultyPostgres(dsn, table_prefix=f"s{uuid.uuid4().hex[:10]}_")
        b.dsn = dsn
    b.loads = Counter()
    yield b
    b.close()


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


# -- a task's BaseException ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RAISES))
def test_a_task_raising_a_base_exception_fails_its_attempts_and_the_worker_serves_on(
    backend: Any, workers, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sayiir")
    client = WorkflowClient(backend)
    handle = workers(backend, [EXITS, PLAIN], "w1")
    client.submit(EXITS, "exit-run", kind)
    wait_for(lambda: client.status("exit-run").status == "failed", what="the run failed")
    error = client.status("exit-run").error
    assert error is not None and error.startswith(f"{kind}: ")
    assert calls["exits"] == 2  # the retry policy applied: one retry
    # The only runner thread lives on: later runs are served.
    for i in range(3):
        client.submit(PLAIN, f"after-{i}", i)
    wait_for(lambda: all(client.status(f"after-{i}").is_completed() for i in range(3)))
    assert handle.running and handle.error is None
    assert f"run 'exit-run' failed: {kind}" in caplog.text


# -- the worker's own errors --------------------------------------------------------------------


class ClaimBug(InMemoryBackend):
    """Fault injection: a bug in the storage layer under the claim loop (not a
    ``BackendError``: nothing a retry could fix)."""

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'attempt'")


def test_an_internal_error_stops_the_whole_worker_with_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sayiir")
    handle = Worker("w1", ClaimBug(), poll_interval=0.1, max_concurrent_tasks=2).start([PLAIN])
    wait_for(lambda: not handle.running, what="every thread of the worker stopped")
    assert isinstance(handle.error, AttributeError)
    assert repr(handle) == "WorkerHandle(worker_id='w1', stopped by AttributeError)"
    assert "worker w1 stopped (internal error in sayiir-worker-w1-" in caplog.text
    assert "Traceback" in caplog.text and "no attribute 'attempt'" in caplog.text
    handle.join(5)


def test_run_raises_when_the_worker_stops_on_an_internal_error() -> None:
    with pytest.raises(WorkflowError, match="stopped on an internal error: AttributeError") as e:
        Worker("w1", ClaimBug(), poll_interval=0.1).run([PLAIN])
    assert isinstance(e.value.__cause__, AttributeError)


class Outage(InMemoryBackend):
    """Fault injection: claims fail as a database that is down makes them fail, until
    ``down_until`` (monotonic time; ``inf``: for good)."""

    def __init__(self, down_for: float) -> None:
        super().__init__()
        self.down_until = time.monotonic() + down_for

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self.down_until:
            raise BackendError("PostgreSQL at db:5432/app is unreachable: connection refused")
        return super().claim(*args, **kwargs)


def test_a_worker_gives_up_after_outage_timeout_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sayiir")
    handle = Worker("w1", Outage(float("inf")), poll_interval=0.1, outage_timeout=1.0).start(
        [PLAIN]
    )
    wait_for(lambda: not handle.running, what="the worker gave up")
    error = handle.error
    assert isinstance(error, BackendError)
    assert str(error).startswith("worker 'w1' gave up: the database kept failing for ")
    assert "(outage_timeout=1s); last error: PostgreSQL at db:5432/app is unreachable" in str(error)
    assert "worker w1 stopped: worker 'w1' gave up" in caplog.text
    with pytest.raises(BackendError, match="gave up: the database kept failing"):
        Worker("w2", Outage(float("inf")), poll_interval=0.1, outage_timeout=0.5).run([PLAIN])


def test_an_outage_shorter_than_outage_timeout_is_waited_out() -> None:
    backend = Outage(1.5)
    client = WorkflowClient(backend)
    client.submit(PLAIN, "p", 1)
    handle = Worker("w1", backend, poll_interval=0.1, outage_timeout=30.0).start([PLAIN])
    try:
        wait_for(lambda: client.status("p").is_completed(), what="the run completed")
        assert handle.running and handle.error is None
    finally:
        handle.shutdown()
        handle.join(10)


def test_worker_options_are_checked() -> None:
    backend = InMemoryBackend()
    worker = Worker("w", backend)
    assert (worker.max_claim_attempts, worker.outage_timeout) == (5, 300.0)
    with pytest.raises(ValueError, match="max_claim_attempts must be at least 1"):
        Worker("w", backend, max_claim_attempts=0)
    with pytest.raises(TypeError, match="max_claim_attempts must be an int"):
        Worker("w", backend, max_claim_attempts=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outage_timeout must be positive"):
        Worker("w", backend, outage_timeout=0)
    assert "max_claim_attempts=5, outage_timeout=300" in repr(worker)


# -- dead-lettering -----------------------------------------------------------------------------


def queue_rows(backend: Any, instance_id: str) -> int:
    if isinstance(backend, FaultyPostgres):
        table = f"{backend._prefix}task_queue"
        with psycopg.connect(backend.dsn) as conn:
            row = conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE instance_id = %s', (instance_id,)
            ).fetchone()
        assert row is not None
        return int(row[0])
    inst = backend._instances[instance_id]
    return len(inst.queue)


def test_a_run_the_engine_fails_on_at_every_claim_is_dead_lettered(
    backend: Any, workers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sayiir")
    client = WorkflowClient(backend)
    client.submit(PLAIN, "poison-1", 1)
    handle = workers(backend, [PLAIN], "w1", claim_ttl=0.5, max_claim_attempts=3)
    wait_for(lambda: client.status("poison-1").status == "failed", what="dead-lettered")
    error = client.status("poison-1").error
    assert error is not None
    assert error.startswith(
        "dead-lettered after 3 attempts: RuntimeError: corrupt row for poison-1 "
        "(raised while the worker ran the next step of run 'poison-1')"
    ), error
    assert "max_claim_attempts=3" in error
    assert backend.loads["poison-1"] == 3  # three claims, then no more
    assert queue_rows(backend, "poison-1") == 0
    # The worker goes on serving other runs, and never claims the dead one again.
    client.submit(PLAIN, "fine", 41)
    wait_for(lambda: client.status("fine").is_completed())
    assert client.status("fine").output == 42
    assert backend.loads["poison-1"] == 3
    assert handle.running
    assert "Traceback" in caplog.text and "corrupt row for poison-1" in caplog.text


def test_the_claim_count_is_the_queue_rows_so_it_survives_the_worker(backend: Any) -> None:
    """Two claims under one worker, the third under another: the count is stored, not kept
    by a worker."""
    client = WorkflowClient(backend)
    client.submit(PLAIN, "poison-2", 1)
    first = Worker("a", backend, poll_interval=0.1, claim_ttl=0.3, max_claim_attempts=3)
    handle = first.start([PLAIN])
    wait_for(lambda: backend.loads["poison-2"] == 2, what="two claims")
    handle.shutdown()
    handle.join(10)
    assert client.status("poison-2").status == "in_progress"
    second = Worker("b", backend, poll_interval=0.1, claim_ttl=0.3, max_claim_attempts=3)
    handle = second.start([PLAIN])
    try:
        wait_for(lambda: client.status("poison-2").status == "failed", what="dead-lettered")
    finally:
        handle.shutdown()
        handle.join(10)
    assert backend.loads["poison-2"] == 3
    assert (client.status("poison-2").error or "").startswith("dead-lettered after 3 attempts")
