"""Child process of ``test_task_exits.py``: a durable run whose task leaves as a process would.

Usage: ``python exit_child.py DB INSTANCE_ID MODE [async]`` where DB is a SQLite file or a
``postgresql://`` URL and MODE is

* ``exit``       the task calls ``sys.exit(3)``;
* ``interrupt``  the task raises ``KeyboardInterrupt``;
* ``sigint``     the task prints ``IN_TASK`` and sleeps; the parent sends SIGINT (Ctrl-C).

With ``async`` the run goes through ``CheckpointingRunner`` under ``asyncio.run`` (and in
``sigint`` mode the task is a coroutine). The child prints the returned status as JSON, then
``STILL_HERE`` (the process went on), and exits 0 if the run returns.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from sayiir import CheckpointingRunner, Flow, run_durable_workflow
from sayiir.backends.sqlite import SqliteBackend

# Ctrl-C as in a terminal, whatever SIGINT disposition this child inherited (a process that
# starts with SIGINT ignored gets no KeyboardInterrupt handler from Python).
signal.signal(signal.SIGINT, signal.default_int_handler)


def open_backend(db: str) -> Any:
    if db.startswith("postgresql://"):
        from sayiir import PostgresBackend

        return PostgresBackend(db)
    return SqliteBackend(db)


MODE = ""


def first(x: int) -> int:
    return x + 1


def leaves(x: int) -> int:
    if MODE == "exit":
        sys.exit(3)
    if MODE == "interrupt":
        raise KeyboardInterrupt
    if MODE == "sigint":
        print("IN_TASK", flush=True)
        time.sleep(60)  # the parent's SIGINT lands here
    return x  # a resume (MODE unset): the task completes


async def leaves_async(x: int) -> int:
    print("IN_TASK", flush=True)
    await asyncio.sleep(60)  # asyncio.run turns the parent's SIGINT into a cancellation
    return x


def workflow(use_async: bool) -> Any:
    """The same definition either way (same ids, same hash): only the task bodies differ."""
    return Flow("leaves").then(first).then(leaves_async if use_async else leaves, name="leaves")


def main() -> None:
    global MODE
    db, iid, MODE = sys.argv[1:4]
    use_async = sys.argv[4:] == ["async"]
    backend = open_backend(db)
    wf = workflow(use_async and MODE == "sigint").build()
    if use_async:
        status = asyncio.run(CheckpointingRunner(backend).run(wf, iid, 1))
    else:
        status = run_durable_workflow(wf, iid, 1, backend=backend)
    print(json.dumps({"status": status.status, "error": status.error}), flush=True)
    print("STILL_HERE", flush=True)
    backend.close()


if __name__ == "__main__":
    main()
