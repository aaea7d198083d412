"""Schedules on every backend, on an explicit clock: each tick starts exactly one run (firers
racing, a firer dying between deciding a tick and starting its run), catch-up within the
window and not beyond, the five overlap policies, DST, pause/resume/trigger/backfill."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sayiir import Flow, InMemoryBackend, PostgresBackend, Schedule, SqliteBackend, WorkflowClient
from sayiir.core.records import FinalState, Status
from sayiir.distributed import schedules as S
from sayiir.errors import WorkflowError

wf = Flow("report").then(lambda x: x, name="build").build()
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # a Thursday, midnight UTC


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    b: Any
    if request.param == "memory":
        b = InMemoryBackend()
    elif request.param == "sqlite":
        b = SqliteBackend(tmp_path / "s.db")
    else:
        b = PostgresBackend(
            request.getfixturevalue("pg_dsn"), table_prefix=f"s{uuid.uuid4().hex[:10]}_"
        )
    yield b
    b.close()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def fire(backend: Any, now: float) -> list[str]:
    """One firer's pass at ``now``: the runs it started."""
    return S.fire_due(backend, now=now)


def end(backend: Any, instance_id: str) -> None:
    """End a run as a worker would: cancelled if a cancel was asked for, else completed."""
    record = backend.get_instance(instance_id)
    asked = record.request is not None and record.request.kind == "cancel"
    final = FinalState(Status.CANCELLED, reason="asked") if asked else FinalState(Status.COMPLETED)
    assert backend.finish(instance_id, final, []) is None


def test_every_tick_starts_one_run_with_two_firers(backend: Any) -> None:
    S.register(backend, Schedule(wf, cron="* * * * *", overlap="allow_all"), T0)
    created: list[str] = []
    for minute in range(1, 11):
        for offset in (0.2, 0.4):  # two firers, each late by a different amount
            created += fire(backend, T0 + 60 * minute + offset)
    expected = [S.run_id("report", T0 + 60 * m) for m in range(1, 11)]
    assert created == expected
    for instance_id in expected:
        assert backend.get_instance(instance_id).input == b"null"
    info = WorkflowClient(backend).schedules()[0]
    assert (info.fired, info.skipped, info.last_run_id) == (10, 0, expected[-1])


def test_firers_racing_on_threads_start_each_tick_once(backend: Any) -> None:
    S.register(
        backend, Schedule(wf, cron="* * * * * *", overlap="allow_all", catchup_window="1h"), T0
    )
    now = T0 + 30.5  # 30 ticks due at once
    barrier = threading.Barrier(4)
    results: list[list[str]] = []

    def firer() -> None:
        barrier.wait()
        results.append(S.fire_due(backend, now=now))

    threads = [threading.Thread(target=firer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    started = [r for result in results for r in result]
    expected = {S.run_id("report", T0 + s) for s in range(1, 31)}
    assert sorted(started) == sorted(expected)  # every tick once, by exactly one firer
    assert backend.get_schedule("report").fired == 30


class _DiesBeforeCreating:
    """A firer killed after its decision was stored, before the run was created."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def create_instance(self, record: Any, *, replace: bool) -> Any:
        raise SystemExit("killed")


def test_a_firer_dying_between_decision_and_run_loses_no_tick(backend: Any) -> None:
    S.register(backend, Schedule(wf, cron="* * * * *"), T0)
    dying = _DiesBeforeCreating(backend)
    with pytest.raises(SystemExit):
        S.fire_due(dying, now=T0 + 60.5)
    record = backend.get_schedule("report")
    assert record.pending_tick == T0 + 60  # decided, not started
    assert backend.get_instance(S.run_id("report", T0 + 60)) is None
    assert fire(backend, T0 + 61) == [S.run_id("report", T0 + 60)]  # the next firer starts it
    assert fire(backend, T0 + 62) == []
    assert backend.get_schedule("report").fired == 1


def test_catch_up_fires_the_missed_ticks_inside_the_window_only(backend: Any) -> None:
    S.register(
        backend, Schedule(wf, cron="* * * * *", overlap="allow_all", catchup_window="5m"), T0
    )
    assert fire(backend, T0 + 60) == [S.run_id("report", T0 + 60)]
    # No firer for ten minutes: ticks 2..11 are missed; at 11:30 the window reaches back to 6:30.
    created = fire(backend, T0 + 11 * 60 + 30)
    assert created == [S.run_id("report", T0 + 60 * m) for m in range(7, 12)]
    info = WorkflowClient(backend).schedules()[0]
    assert (info.fired, info.skipped) == (6, 5)  # ticks 2..6 are older than the window
    assert info.next_tick == datetime.fromtimestamp(T0 + 12 * 60, UTC)


@pytest.mark.parametrize(
    ("policy", "at_tick_1", "first_cancelled", "at_recheck", "at_tick_2"),
    [
        ("skip", [], False, [], [2]),
        ("allow_all", [1], False, [], [2]),
        ("buffer_one", [], False, [1], []),
        ("terminate_other", [1], True, [], [2]),
        ("cancel_other", [], True, [1], []),
    ],
)
def test_overlap_policies(
    backend: Any,
    policy: str,
    at_tick_1: list[int],
    first_cancelled: bool,
    at_recheck: list[int],
    at_tick_2: list[int],
) -> None:
    """Tick 0 starts a run that is still active at tick 1 (the *_other policies ask for its
    cancel: a worker applies it at the run's next step); then it ends, and the schedule is
    re-checked a second later, then at tick 2 (the run of tick 1, if any, still active)."""

    def ids(minutes: list[int]) -> list[str]:
        return [S.run_id("report", T0 + 60 * m) for m in minutes]

    S.register(backend, Schedule(wf, cron="* * * * *", overlap=policy), T0 - 60)
    first = fire(backend, T0 + 0.5)
    assert first == ids([0])
    assert fire(backend, T0 + 60.5) == ids(at_tick_1)
    request = backend.get_instance(first[0]).request
    assert (request is not None and request.kind == "cancel") is first_cancelled
    end(backend, first[0])
    assert backend.get_instance(first[0]).status.value == (
        "cancelled" if first_cancelled else "completed"
    )
    assert fire(backend, T0 + 61.6) == ids(at_recheck)
    assert fire(backend, T0 + 120.5) == ids(at_tick_2)


def _daily_runs(backend: Any, cron: str, start: str, hours: int) -> list[str]:
    t = utc(start)
    S.register(backend, Schedule(wf, cron=cron, timezone="Europe/Paris", overlap="allow_all"), t)
    created: list[str] = []
    for step in range(hours * 4):
        created += fire(backend, t + 900 * (step + 1) + 0.5)
    return created


def test_dst_spring_forward_fires_a_skipped_time_once_after_the_gap(backend: Any) -> None:
    # 2026-03-29: Paris jumps from 02:00 to 03:00 (CET -> CEST). 02:30 does not exist.
    created = _daily_runs(backend, "30 2 * * *", "2026-03-28T12:00:00", 62)
    assert created == [
        "report@2026-03-29T01:00:00Z",  # 03:00 CEST: right after the gap, once
        "report@2026-03-30T00:30:00Z",  # 02:30 CEST
        "report@2026-03-31T00:30:00Z",
    ]


def test_dst_fall_back_fires_a_repeated_time_once(backend: Any) -> None:
    # 2026-10-25: Paris goes from 03:00 CEST back to 02:00 CET: 02:30 happens twice.
    created = _daily_runs(backend, "30 2 * * *", "2026-10-24T12:00:00", 62)
    assert created == [
        "report@2026-10-25T00:30:00Z",  # the first 02:30 (CEST) only
        "report@2026-10-26T01:30:00Z",  # 02:30 CET
        "report@2026-10-27T01:30:00Z",
    ]


def test_dst_hourly_schedule_counts_real_hours(backend: Any) -> None:
    # An hourly schedule fires every real hour: 25 runs on the local day of the fall-back.
    created = _daily_runs(backend, "0 * * * *", "2026-10-24T22:00:00", 25)
    assert len(created) == len(set(created)) == 25
    hours = [datetime.fromisoformat(r.split("@")[1].replace("Z", "+00:00")) for r in created]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hours))


def test_pause_resume_delete(backend: Any) -> None:
    client = WorkflowClient(backend)
    S.register(backend, Schedule(wf, cron="* * * * *", overlap="allow_all"), T0)
    S.set_paused(backend, "report", True, T0 + 10)
    assert fire(backend, T0 + 600) == []
    assert backend.next_schedule_at() is None
    assert client.schedules()[0].paused
    S.set_paused(backend, "report", False, T0 + 630)  # missed ticks are not caught up
    assert fire(backend, T0 + 660.5) == [S.run_id("report", T0 + 660)]
    assert client.delete_schedule("report") is True
    assert client.delete_schedule("report") is False
    assert fire(backend, T0 + 720.5) == []
    with pytest.raises(WorkflowError, match="no schedule 'report'"):
        client.pause_schedule("report")


def test_trigger_and_backfill(backend: Any) -> None:
    client = WorkflowClient(backend)
    S.register(backend, Schedule(wf, cron="0 * * * *", input={"k": 1}), T0)
    manual = client.trigger_schedule("report")
    assert manual.startswith("report@manual-")
    assert backend.codec.decode(backend.get_instance(manual).input) == {"k": 1}
    start, end = datetime(2025, 12, 31, 20, tzinfo=UTC), datetime(2025, 12, 31, 23, tzinfo=UTC)
    first = client.backfill_schedule("report", start, end)
    assert first == [f"report@2025-12-31T{h}:00:00Z" for h in (20, 21, 22, 23)]
    assert client.backfill_schedule("report", start, end) == []  # each tick runs once
    with pytest.raises(ValueError, match=r"more than 10000 ticks"):
        client.backfill_schedule("report", datetime(2000, 1, 1, tzinfo=UTC), end)
    with pytest.raises(ValueError, match="aware datetimes"):
        client.backfill_schedule("report", datetime(2025, 1, 1), end)


def test_jitter_is_the_same_on_every_firer_and_within_bounds(backend: Any) -> None:
    S.register(backend, Schedule(wf, cron="* * * * *", jitter="30s", overlap="allow_all"), T0)
    fire_at = backend.get_schedule("report").fire_at
    assert T0 + 60 <= fire_at <= T0 + 90
    assert fire(backend, fire_at - 0.01) == []
    assert fire(backend, fire_at) == [S.run_id("report", T0 + 60)]


def test_registering_again_updates_and_keeps_the_place_in_time(backend: Any) -> None:
    S.register(backend, Schedule(wf, cron="* * * * *", overlap="allow_all"), T0)
    fire(backend, T0 + 60.5)
    S.register(backend, Schedule(wf, cron="* * * * *", input=7, overlap="allow_all"), T0 + 90)
    record = backend.get_schedule("report")
    assert (record.fired, record.next_tick, record.input) == (1, T0 + 120, b"7")
    S.register(backend, Schedule(wf, cron="*/5 * * * *"), T0 + 90)
    assert backend.get_schedule("report").next_tick == T0 + 300


def test_bad_definitions_say_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"invalid cron expression 'every day'.*five fields"):
        Schedule(wf, cron="every day")
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'.*IANA"):
        Schedule(wf, cron="* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match=r"unknown overlap policy 'queue'.*skip, buffer_one"):
        Schedule(wf, cron="* * * * *", overlap="queue")
    with pytest.raises(ValueError, match="catchup_window must be >= 0"):
        Schedule(wf, cron="* * * * *", catchup_window=-1)


def test_a_worker_fires_its_backends_schedules_and_runs_them(
    workers: Any,
) -> None:
    backend = InMemoryBackend()
    client = WorkflowClient(backend)
    client.schedule(Schedule(wf, cron="* * * * * *", input=5, overlap="allow_all"))
    workers(backend, [wf], "w1")
    deadline = time.monotonic() + 60
    while True:
        done = [s for s in client.schedules() if s.last_run_id is not None] and client.status(
            client.schedules()[0].last_run_id or ""
        ).status
        if done == "completed" and client.schedules()[0].fired >= 2:
            break
        assert time.monotonic() < deadline, "the worker fired nothing"
        time.sleep(0.05)
    assert client.status(client.schedules()[0].last_run_id or "").output == 5


def test_a_worker_with_schedules_off_runs_no_scheduler(workers: Any) -> None:
    def schedulers() -> list[str]:
        return [t.name for t in threading.enumerate() if "scheduler of worker" in t.name]

    backend = InMemoryBackend()
    workers(backend, [wf], "off", schedules=False)
    assert schedulers() == []
    workers(backend, [wf], "on")
    assert schedulers() == ["sayiir-scheduler of worker on"]


def test_cli_lists_and_operates_schedules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sayiir.cli.app import main

    path = tmp_path / "cli.db"
    with SqliteBackend(path) as backend:
        WorkflowClient(backend).schedule(Schedule(wf, cron="0 2 * * *", timezone="Europe/Paris"))
    assert main(["schedules", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["ID", "WORKFLOW", "CRON", "TIMEZONE"]
    assert "report  report    0 2 * * *  Europe/Paris  active" in out
    assert main(["schedules", str(path), "pause", "report"]) == 0
    assert main(["schedules", str(path)]) == 0
    assert "paused" in capsys.readouterr().out
    assert main(["schedules", str(path), "trigger", "report"]) == 0
    assert capsys.readouterr().out.startswith("report@manual-")
    argv = ["schedules", str(path), "backfill", "report", "--start", "2026-01-01T00:00:00+00:00"]
    assert main([*argv, "--end", "2026-01-02T12:00:00+00:00"]) == 0
    assert "2 run(s) started" in capsys.readouterr().out
    assert main(["schedules", str(path), "delete", "nope"]) == 1
    assert "no schedule 'nope'" in capsys.readouterr().err
    assert main(["schedules", str(path), "pause"]) == 1
    assert "needs a schedule id" in capsys.readouterr().err


def test_a_scheduled_run_is_limited_like_a_submitted_one(backend: Any) -> None:
    """The schedule carries the workflow's run limit (its key from the schedule's input):
    a tick's run waits while a submitted run of the same key holds the only slot."""
    limited = (
        Flow("limited", concurrency_key=lambda x: x["tenant"], max_concurrent=1)
        .then(lambda x: x, name="build")
        .build()
    )
    client = WorkflowClient(backend)
    client.submit(limited, "by-hand", {"tenant": "acme"})
    [held] = backend.claim("w1", [limited.definition_hash], [], 10, 60.0)
    assert held.instance_id == "by-hand"
    S.register(
        backend,
        Schedule(limited, cron="* * * * *", input={"tenant": "acme"}, overlap="allow_all"),
        T0,
    )
    [tick] = fire(backend, T0 + 60)
    assert backend.claim("w1", [limited.definition_hash], [], 10, 60.0) == []
    assert client.waiting_reason(tick) == (
        "queued: concurrency key 'limited:acme' is at its limit (1 of 1 held by by-hand)"
    )
    end(backend, "by-hand")
    [started] = backend.claim("w1", [limited.definition_hash], [], 10, 60.0)
    assert started.instance_id == tick
