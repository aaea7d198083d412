"""Task limits in one process (docs/flow-control.md, "Task limits"): the options are checked
when a task is decorated; plain, durable, async and worker runs hold the limits; a limit wait
is neither a failure nor a retry; the slot is given back however an attempt ends; a storage
that cannot enforce the limits is refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sayiir import (
    CheckpointingRunner,
    Flow,
    InMemoryBackend,
    RateLimit,
    Worker,
    WorkflowClient,
    get_task_context,
    run_durable_workflow,
    run_workflow,
    task,
)
from sayiir.backends.sqlite import SqliteBackend
from sayiir.errors import WorkflowError


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    b: Any = InMemoryBackend() if request.param == "memory" else SqliteBackend(tmp_path / "r.db")
    try:
        yield b
    finally:
        b.close()


class Peak:
    """How many bodies run at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrent": 0}, ValueError, r"max_concurrent=0\): at most how many"),
        ({"max_concurrent": "2"}, TypeError, r"max_concurrent=...\) must be an int"),
        ({"max_concurrent": True}, TypeError, r"must be an int, not bool"),
        ({"rate_limit": 10}, TypeError, r"must be a sayiir.RateLimit\(n, per\)"),
    ],
)
def test_invalid_task_limits_fail_at_decoration(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        task(**options)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0, "1s"), {}, ValueError, r"n=0\): n is how many starts a period allows, at least 1"),
        ((1.5, "1s"), {}, TypeError, r"n=...\) must be an int"),
        ((1, 0), {}, ValueError, r"the period must be more than 0 seconds"),
        ((1, "-1s"), {}, ValueError, r"Invalid duration"),
        ((1, None), {}, TypeError, r"per=...\) must be seconds, a timedelta"),
        ((1, "1s"), {"key": "customer"}, TypeError, r"key=...\) must be a function"),
        ((1, "1s"), {"name": ""}, TypeError, r"name=...\) must be a non-empty str"),
    ],
)
def test_invalid_rate_limits_fail_when_made(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RateLimit(*args, **kwargs)


def test_rate_limit_periods_take_seconds_timedeltas_and_strings() -> None:
    assert RateLimit(1, 2).per == 2.0
    assert RateLimit(1, timedelta(minutes=10)).per == 600.0
    assert RateLimit(1, "10m").per == 600.0
    assert RateLimit(1, "250ms").per == 0.25


# -- runs hold the limits ----------------------------------------------------------------------


def _capped(peak: Peak, name: str, limit: int = 2) -> Any:
    @task(name, max_concurrent=limit)
    def body(x: int) -> int:
        with peak:
            time.sleep(0.01)
        return x + 1

    return Flow(f"wf-{name}").then(body).build()


def _race(n: int, target: Any) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def test_plain_runs_on_threads_hold_the_limit() -> None:
    peak = Peak()
    wf = _capped(peak, "plain_capped")
    results: list[int] = []
    _race(8, lambda i: results.append(run_workflow(wf, i)))
    assert sorted(results) == list(range(1, 9))
    assert peak.peak <= 2


def test_durable_runs_on_threads_hold_the_limit(backend: Any) -> None:
    peak = Peak()
    wf = _capped(peak, "durable_capped")
    _race(8, lambda i: run_durable_workflow(wf, f"run-{i}", i, backend=backend))
    assert [backend.get_instance(f"run-{i}").status.value for i in range(8)] == ["completed"] * 8
    assert peak.calls == 8
    assert peak.peak <= 2


def test_async_runs_hold_the_limit() -> None:
    peak = Peak()

    @task(max_concurrent=1)
    async def limited(x: int) -> int:
        with peak:
            await asyncio.sleep(0.01)
        return x

    wf = Flow("async_capped").then(limited).build()
    runner = CheckpointingRunner(InMemoryBackend())

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.run(wf, f"a-{i}", i) for i in range(5)))

    statuses = asyncio.run(main())
    assert [s.status for s in statuses] == ["completed"] * 5
    assert peak.peak == 1


def test_a_rate_limit_spaces_the_starts_of_plain_runs() -> None:
    starts: list[float] = []

    @task(rate_limit=RateLimit(2, "0.2s", name="plain-api"))
    def call(x: int) -> int:
        starts.append(time.time())
        return x

    wf = Flow("rated_plain").then(call).build()
    for i in range(5):
        run_workflow(wf, i)
    starts.sort()
    # The third start of any 0.2 s is refused. The window counts the gate's clock readings,
    # which precede each body's own reading by a little, more for the first run (cold
    # caches): bodies may be that much closer (a miss would be ~0.2 s, not 20 ms).
    for i in range(2, 5):
        assert starts[i] - starts[i - 2] > 0.2 - 0.02


def test_a_rate_limit_key_gives_each_value_its_window() -> None:
    starts: dict[str, list[float]] = {"a": [], "b": []}

    @task(rate_limit=RateLimit(1, "10s", key=lambda o: o["customer"]))
    def per_customer(order: dict[str, str]) -> str:
        starts[order["customer"]].append(time.time())
        return order["customer"]

    wf = Flow("per_customer").then(per_customer).build()
    # Two customers in a row: no wait (a shared window would make the second wait 10 s).
    assert run_workflow(wf, {"customer": "a"}) == "a"
    assert run_workflow(wf, {"customer": "b"}) == "b"


def test_a_rate_limit_key_that_raises_fails_the_run() -> None:
    @task(rate_limit=RateLimit(1, "1s", key=lambda o: o["missing"]))
    def keyed(order: dict[str, str]) -> str:
        return "never"

    wf = Flow("bad_key").then(keyed).build()
    status = run_durable_workflow(wf, "bad-key", {}, backend=InMemoryBackend())
    assert status.status == "failed"
    assert "the rate_limit key of task 'keyed' raised on this input: KeyError" in (
        status.error or ""
    )


# -- the slot is given back, a wait is no failure ------------------------------------------------


def test_the_slot_is_given_back_when_an_attempt_fails_or_times_out(backend: Any) -> None:
    calls = {"n": 0}

    @task(max_concurrent=1, retries=1, timeout="0.2s")
    def flaky(x: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("first attempt fails")
        if calls["n"] == 2:
            time.sleep(0.5)  # times out
        return x

    flaky_wf = Flow("flaky").then(flaky).build()
    status = run_durable_workflow(flaky_wf, "flaky-1", 1, backend=backend)
    assert status.status == "failed"  # one failure, one timeout: out of retries
    # The slot was given back each time: the next run gets it at once.
    assert run_durable_workflow(flaky_wf, "flaky-2", 7, backend=backend).output == 7


@pytest.mark.parametrize("mode", ["in-process", "worker"])
def test_the_slot_is_free_once_the_task_is_checkpointed_while_its_run_goes_on(
    backend: Any, mode: str
) -> None:
    """The slot goes with the limited task's checkpoint (no release of its own): a run that
    is busy in a later step, or in another branch of a fork, does not hold it."""
    later_started, release_later = threading.Event(), threading.Event()

    @task(max_concurrent=1)
    def gate(x: int) -> int:
        return x + 1

    @task
    def slow(x: int) -> int:
        if x == 2:  # the first run only
            later_started.set()
            assert release_later.wait(30)
        return x

    @task
    def side(x: int) -> int:
        return -x

    @task
    def merge(outputs: dict[str, int]) -> int:
        return sum(outputs.values())

    wf = (
        Flow(f"goes_on_{mode.replace('-', '_')}")
        .fork().branch(gate, slow).branch(side).join(merge)
        .build()
    )  # fmt: skip
    handles = []
    try:
        if mode == "in-process":
            first = threading.Thread(
                target=run_durable_workflow, args=(wf, "g-1", 1), kwargs={"backend": backend}
            )
            first.start()
            assert later_started.wait(30)
            # The first run sits in `slow`, its fork unjoined: `gate` is free.
            assert run_durable_workflow(wf, "g-2", 5, backend=backend).output == 6 - 5
        else:
            client = WorkflowClient(backend)
            handles = [
                Worker(f"w{n}", backend, max_concurrent_tasks=2, poll_interval=0.02).start([wf])
                for n in range(2)
            ]
            client.submit(wf, "g-1", 1)
            assert later_started.wait(30)
            client.submit(wf, "g-2", 5)
            deadline = time.monotonic() + 30
            while not client.status("g-2").is_completed():
                assert time.monotonic() < deadline, client.status("g-2")
                time.sleep(0.02)
            assert client.status("g-2").output == 6 - 5
        release_later.set()
        if mode == "in-process":
            first.join(30)
        deadline = time.monotonic() + 30
        while backend.get_instance("g-1").status.value != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        release_later.set()
        for h in handles:
            h.shutdown()
        for h in handles:
            h.join()


def test_a_limit_wait_on_workers_is_neither_a_failure_nor_a_retry(backend: Any) -> None:
    attempts: list[int] = []
    peak = Peak()

    @task(max_concurrent=1)  # no retries: a wait counted as a failure would fail the run
    def single(x: int) -> int:
        ctx = get_task_context()
        assert ctx is not None
        attempts.append(ctx.attempt)
        with peak:
            time.sleep(0.05)
        return x

    wf = Flow("single").then(single).build()
    client = WorkflowClient(backend)
    for i in range(4):
        client.submit(wf, f"s-{i}", i)
    handles = [
        Worker(f"w{n}", backend, max_concurrent_tasks=2, poll_interval=0.05).start([wf])
        for n in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(client.status(f"s-{i}").is_completed() for i in range(4)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        for h in handles:
            h.shutdown()
        for h in handles:
            h.join()
    assert peak.peak == 1
    assert attempts == [1, 1, 1, 1]


# -- storages that cannot enforce them -----------------------------------------------------------


class _NoTaskLimits:
    """InMemoryBackend without its task limits (as a third-party storage would be)."""

    _MISSING = frozenset({"acquire_task_slot", "release_task_slot", "take_rate_token"})

    def __init__(self) -> None:
        self._inner = InMemoryBackend()

    def __getattr__(self, name: str) -> Any:
        if name in self._MISSING:
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_storage_without_task_limits_refuses_a_limited_workflow_only() -> None:
    storage = _NoTaskLimits()
    peak = Peak()
    limited = _capped(peak, "refused_capped")
    with pytest.raises(WorkflowError, match=r"has task limits .* does not enforce"):
        run_durable_workflow(limited, "r-1", 1, backend=storage)
    with pytest.raises(WorkflowError, match="rate_limit on 'refused_capped'"):
        WorkflowClient(storage).submit(limited, "r-2", 1)
    assert peak.calls == 0
    plain = Flow("unlimited").then(lambda x: x, name="same").build()
    assert run_durable_workflow(plain, "r-3", 5, backend=storage).output == 5
