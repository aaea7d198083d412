"""Script of ``test_fork_safety.py``: fork while another thread runs fork-heavy workflows.

Usage: ``python fork_child.py MODE`` with MODE ``os.fork`` (20 bare forks in a row),
``multiprocessing`` (a ``fork``-context pool of 2 processes, 8 jobs) or ``tracing``. A
background thread runs workflows with blocking fork branches all along, so the branch pool's
threads, slots and locks are in use at the moment of each fork. In every child, a workflow
whose two branches need each other (``a`` waits for ``b``) must complete: that needs a
working branch pool in the child. In ``tracing`` mode the background thread turns sayiir's
logging on and off instead (``init_tracing``/``shutdown_tracing``, under a module lock) and
each child must be able to turn it on. Prints ``OK <n>`` with the number of children that
succeeded; exit code 0.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sayiir import (
    Flow,
    InMemoryBackend,
    init_tracing,
    run_durable_workflow,
    run_workflow,
    shutdown_tracing,
)

WAIT = 10.0  # how long branch a waits for branch b before the run counts as broken


def pair_workflow() -> Any:
    seen = threading.Event()

    def a(x: int) -> int:
        if not seen.wait(WAIT):
            raise RuntimeError("branch b never ran beside branch a: no branch thread")
        return x + 1

    def b(x: int) -> int:
        seen.set()
        return x + 2

    return Flow("pair").fork().branch(a).branch(b).join(lambda d: d["a"] + d["b"], name="j")


def run_pair(n: int) -> int:
    """One plain and one durable run of the pair workflow; their summed outputs."""
    plain = run_workflow(pair_workflow().build(), n)
    status = run_durable_workflow(pair_workflow().build(), f"p{n}", n, backend=InMemoryBackend())
    assert status.status == "completed", status
    return int(plain) + int(status.output)


def busy(stop: threading.Event, started: threading.Event) -> None:
    """Fork-heavy work: forks of branches that block briefly (so pool threads join in)."""

    def nap(x: int) -> int:
        time.sleep(0.0005)
        return x

    branches = Flow("busy").fork()
    for i in range(8):
        branches = branches.branch(nap, name=f"nap{i}")
    wf = branches.join(lambda d: sum(d.values()), name="total").build()
    while not stop.is_set():
        run_workflow(wf, 1)
        started.set()


def toggling(stop: threading.Event, started: threading.Event) -> None:
    while not stop.is_set():
        init_tracing()
        shutdown_tracing()
        started.set()


def child_pair(i: int) -> bool:
    return run_pair(i) == 2 * (2 * i + 3)


def child_tracing(i: int) -> bool:
    init_tracing()
    shutdown_tracing()
    return True


def with_forks(count: int, check: Callable[[int], bool]) -> int:
    done = 0
    for i in range(count):
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists here
            code = 1
            try:
                code = 0 if check(i) else 1
            finally:
                os._exit(code)
        if _reap(pid, 3 * WAIT) != 0:
            break  # a broken (or hung, then killed) child: stop here, the count says so
        done += 1
    return done


def _reap(pid: int, timeout: float) -> int:
    """The child's exit code; a child still there after ``timeout`` is hung: SIGKILL it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -signal.SIGKILL


def with_pool(jobs: int) -> int:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        pending = pool.map_async(run_pair, range(jobs))
        try:
            results = pending.get(timeout=jobs * 2 * WAIT)
        except Exception as exc:  # a broken or hung child
            print(f"pool failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return 0
    return sum(1 for n, r in enumerate(results) if r == 2 * (2 * n + 3))


def main() -> None:
    mode = sys.argv[1]
    stop, started = threading.Event(), threading.Event()
    load = toggling if mode == "tracing" else busy
    worker = threading.Thread(target=load, args=(stop, started), daemon=True)
    worker.start()
    started.wait(30)
    try:
        if mode == "multiprocessing":
            done = with_pool(8)
        else:
            done = with_forks(20, child_tracing if mode == "tracing" else child_pair)
    finally:
        stop.set()
        worker.join(30)
    print(f"OK {done}", flush=True)


if __name__ == "__main__":
    main()
