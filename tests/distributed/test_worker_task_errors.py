"""Workers: whatever a task raises, or whatever fails while its output is encoded, fails the
run with a clear error, and the worker thread lives on to run the next one (issue 10, item 3).

Before, a task's ``SystemExit``/``KeyboardInterrupt`` ended the worker's runner thread
silently and left the run ``running``; an output the codec could not encode left it
``running`` too. In-process workers on InMemoryBackend and PostgreSQL.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from sayiir import Flow, WorkflowClient
from sayiir.worker import Worker


class Weird(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def first(x: int) -> int:
    return x + 1


def exits(x: int) -> int:
    sys.exit(3)


def interrupted(x: int) -> int:
    raise KeyboardInterrupt


def str_raises(x: int) -> int:
    raise Weird()


def deep(x: int) -> Any:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    return value


CASES: dict[str, tuple[Callable[[int], Any], Callable[[str], bool]]] = {
    "system-exit": (exits, lambda e: e == "SystemExit: 3"),
    "keyboard-interrupt": (interrupted, lambda e: e == "KeyboardInterrupt: "),
    "str-raises": (str_raises, lambda e: e == "Weird: <exception str() failed>"),
    "deep-output": (
        deep,
        lambda e: (
            e.startswith("RecursionError: maximum recursion depth exceeded")
            and e.endswith("(output of task 'deep')")
        ),
    ),
}


def _wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.mark.parametrize("name", list(CASES))
def test_a_failing_task_fails_the_run_and_the_worker_goes_on(backend: Any, name: str) -> None:
    fn, check = CASES[name]
    bad = Flow(f"bad-{name}").then(first).then(fn).build()
    good = Flow("good").then(first).build()
    client = WorkflowClient(backend)
    handle = Worker("w1", backend, poll_interval=0.05).start([bad, good])
    try:
        client.submit(bad, "bad-run", 1)
        _wait_for(lambda: client.status("bad-run").status == "failed")
        assert check(client.status("bad-run").error or ""), client.status("bad-run").error
        # The same runner thread takes the next run (max_concurrent_tasks=1).
        client.submit(good, "good-run", 1)
        _wait_for(lambda: client.status("good-run").status == "completed")
        assert client.status("good-run").output == 2
        assert handle.running
    finally:
        handle.shutdown()
        handle.join(10)
