"""Live updates: the change feed pushes the ids of changed runs over SSE, and nothing else."""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from typing import Any

import pytest

import sayiir.ui
from sayiir.executor import cancel_workflow, pause_workflow
from tests.ui.server import serve


def _events(url: str, into: queue.Queue[Any], stop: threading.Event) -> None:
    with urllib.request.urlopen(url, timeout=60) as stream:
        event = ""
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("retry:"):
                into.put("open")
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "change":
                into.put(json.loads(line[6:])["ids"])
            if stop.is_set():
                return


def _wait_for(predicate: Any) -> None:
    done = threading.Event()
    while not predicate():
        done.wait(0.01)


def test_changed_runs_are_pushed_and_an_idle_console_sends_nothing(
    backend: Any, runs: dict[str, str]
) -> None:
    app = sayiir.ui.app(backend, token=None, poll_interval=0.02)
    feed = app.state.console.feed
    received: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    pushing = callable(getattr(backend, "subscribe_changes", None))  # PostgreSQL: NOTIFY
    with serve(app) as base:
        reader = threading.Thread(
            target=_events, args=(f"{base}/events", received, stop), daemon=True
        )
        reader.start()
        assert received.get(timeout=30) == "open"
        if pushing:
            assert received.get(timeout=30) is None  # LISTENing: "look at everything" once
        else:
            _wait_for(lambda: feed.polls >= 10)  # ten idle polls: no event may come of them
        cancel_workflow(runs["waiting"], backend, reason="test")
        assert received.get(timeout=30) == [runs["waiting"]]
        pause_workflow("order-002", backend)
        pause_workflow("order-004", backend)
        batch = set(received.get(timeout=30))
        while batch != {"order-002", "order-004"}:  # one batch, or two if a poll fell between
            assert batch <= {"order-002", "order-004"}
            batch |= set(received.get(timeout=30))
        if pushing:
            assert feed.polls == 0  # nothing is queried while nothing changes
        stop.set()
        cancel_workflow("order-005", backend)  # wakes the reader so that it sees stop
    reader.join(30)


@pytest.mark.postgres
def test_postgres_announces_new_runs_and_status_changes_not_checkpoints(pg_dsn: str) -> None:
    from sayiir import Flow, run_durable_workflow
    from sayiir.backends.postgres import PostgresBackend

    flow = Flow("three").then(lambda x: x + 1, name="a").then(lambda x: x, name="b").build()
    seen: queue.Queue[str | None] = queue.Queue()
    with PostgresBackend(pg_dsn, table_prefix="notify_") as backend:
        unsubscribe = backend.subscribe_changes(seen.put)
        assert seen.get(timeout=30) is None  # listening
        run_durable_workflow(flow, "three-1", 1, backend)  # insert, 3 checkpoints, completed
        run_durable_workflow(flow, "marker", 1, backend)
        payloads = []
        while (payload := seen.get(timeout=30)) != "marker":
            payloads.append(payload)
        assert payloads == ["three-1", "three-1"]  # started, completed: no checkpoint noise
        unsubscribe()
