"""Workflows served by the worker processes of test_worker_processes.py.

Every task appends "<instance> <task> <pid> <event>" to the ledger file named by
$SAYIIR_TEST_LEDGER (one small O_APPEND write per line, so lines never mix), which
lets the tests see which process ran what, and how often.

$SAYIIR_TEST_EXIT_AFTER_WRITES=k makes a worker process die (``os._exit``, as SIGKILL
would) right after its k-th storage write: a crash at a chosen point of its work.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sayiir import Flow, PostgresBackend, get_task_context, task


def note(event: str = "run") -> None:
    ctx = get_task_context()
    assert ctx is not None
    line = f"{ctx.instance_id} {ctx.task_id} {os.getpid()} {event}\n".encode()
    fd = os.open(os.environ["SAYIIR_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def pause() -> None:
    time.sleep(float(os.environ.get("SAYIIR_TEST_TASK_SECS", "0.05")))


@task
def begin(x: int) -> int:
    note()
    return x


@task
def branch_a(x: int) -> int:
    note()
    pause()
    return x + 1


@task
def branch_b(x: int) -> int:
    note()
    pause()
    return x + 2


@task
def branch_c(x: int) -> int:
    note()
    pause()
    return x + 3


@task
def gather(parts: dict[str, int]) -> int:
    note()
    return sum(parts.values())


@task
def finish(x: int) -> int:
    note()
    return x * 10


@task
def slow(x: int) -> dict[str, int]:
    """Long enough to be killed or stopped in the middle; returns who finished it."""
    note("start")
    time.sleep(float(os.environ.get("SAYIIR_TEST_SLOW_SECS", "3")))
    note("end")
    return {"value": x + 1, "pid": os.getpid()}


@task
def after_slow(result: dict[str, int]) -> dict[str, int]:
    note()
    return result


@task(tags=["gpu"])
def on_gpu(x: int) -> int:
    note()
    return x * 2


@task(priority=1)
def urgent(x: int) -> int:
    note()
    return x


@task(priority=5)
def lazy(x: int) -> int:
    note()
    return x


fan = (
    Flow("fan")
    .then(begin)
    .fork()
    .branch(branch_a)
    .branch(branch_b)
    .branch(branch_c)
    .join(gather)
    .then(finish)
    .build()
)


def _part(n: int) -> Any:
    @task(f"part_{n}")
    def part(x: int) -> int:
        note()
        pause()
        return x + n

    return part


def _octet() -> Any:
    fork = Flow("octet").then(begin).fork()
    for n in range(8):
        fork = fork.branch(_part(n))
    return fork.join(gather).then(finish).build()


# An 8-branch fork: the spreading worker takes queued branches, the others claim some.
octet = _octet()
sleepy = Flow("sleepy").then(begin).then(slow).then(after_slow).build()
parked = Flow("parked").then(begin).delay("nap", 0.5).wait_for_signal("go").then(finish).build()
tagged = Flow("tagged").then(begin).then(on_gpu).build()
urgent_flow = Flow("urgent").then(urgent).build()
lazy_flow = Flow("lazy").then(lazy).build()

duo = Flow("duo").then(begin).then(finish).build()


def stamp(order: dict[str, Any], event: str) -> None:
    """Append "<run> <key> <event> <time>" to $SAYIIR_TEST_INTERVALS (concurrency tests)."""
    ctx = get_task_context()
    assert ctx is not None
    line = f"{ctx.instance_id} {order['key']} {event} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["SAYIIR_TEST_INTERVALS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task
def keyed_first(order: dict[str, Any]) -> dict[str, Any]:
    stamp(order, "start")
    time.sleep(0.002)
    return order


@task
def keyed_last(order: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.002)
    stamp(order, "end")
    return order


# At most one run per key at a time, however many workers (docs/flow-control.md).
keyed = (
    Flow("keyed", concurrency_key=lambda order: order["key"], max_concurrent=1)
    .then(keyed_first)
    .then(keyed_last)
    .build()
)
signalled = Flow("signalled").then(begin).then(slow).wait_for_signal("go").then(finish).build()

workflows = [fan, sleepy, parked, tagged, urgent_flow, lazy_flow, duo, signalled, keyed, octet]

_WRITES = (
    "advance", "advance_gated", "finish_and_claim", "finish", "save_steps", "enqueue",
    "record_attempt",
)  # fmt: skip


def _exit_after_writes(count: int) -> None:
    """Die, as SIGKILL would, right after the ``count``-th write this process commits."""
    done = [0]
    lock = threading.Lock()

    def wrap(name: str) -> None:
        original: Callable[..., Any] = getattr(PostgresBackend, name)

        def write(self: PostgresBackend, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            with lock:
                done[0] += 1
                if done[0] >= count:
                    os._exit(137)
            return result

        setattr(PostgresBackend, name, write)

    for name in _WRITES:
        wrap(name)


def _install_hooks() -> None:
    exit_after = os.environ.get("SAYIIR_TEST_EXIT_AFTER_WRITES")
    if exit_after:
        _exit_after_writes(int(exit_after))


_install_hooks()
