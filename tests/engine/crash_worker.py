"""Child process of ``test_crash.py``: runs or resumes a 4-step durable workflow.

Usage: ``python crash_worker.py DB LEDGER INSTANCE_ID MODE`` where DB is a SQLite file
or a ``postgresql://`` URL, and MODE is

* ``exit``   start the run; task 3 calls ``os._exit(137)`` (the process dies mid-task);
* ``sleep``  start the run; task 3 prints ``IN_TASK_3`` and sleeps until it is killed;
* ``backoff`` start the run; task 3's first attempt fails, prints ``FAILED_ONCE`` and the
  process idles in the 30 s retry backoff (the parent kills it there, once the failed
  attempt is in the database);
* ``resume`` resume the instance and print its status as JSON;
* ``resume-failing`` resume, with task 3 failing on every attempt, on a virtual clock (the
  rest of the 30 s backoff passes at once);
* ``many``   run 15 small workflows (ids ``<INSTANCE_ID>-<n>``) and print how many completed;
* ``repeat-exit`` start a run of ``task_1, task_2, task_1`` (one task used twice); the second
  use of task_1 calls ``os._exit(137)``;
* ``repeat-resume`` resume that run and print its status as JSON.

Every task execution appends ``<task> <pid>`` to LEDGER (flushed and fsynced) before its work,
so the parent can prove which tasks ran in which process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sayiir import Flow, RetryPolicy, Workflow, resume_workflow, run_durable_workflow, task
from sayiir.backends.sqlite import SqliteBackend
from sayiir.testing import virtual_time

# A short execution lease, so that a resume may take over a killed run soon after.
LEASE_SECS = 1.0


def open_backend(db: str) -> Any:
    """The durable store named on the command line: a SQLite file or a PostgreSQL URL."""
    if db.startswith(("postgresql://", "postgres://")):
        from sayiir import PostgresBackend

        return PostgresBackend(db, lease_secs=LEASE_SECS)
    return SqliteBackend(db, lease_secs=LEASE_SECS)


def resume_when_free(wf: Workflow, instance_id: str, backend: Any, timeout: float = 60.0) -> Any:
    """The documented recovery: a resume reports ``in_progress`` while the killed process's
    lease lasts; once it has expired, the resume takes the run over and finishes it."""
    deadline = time.monotonic() + timeout
    while True:
        status = resume_workflow(wf, instance_id, backend)
        if status.status != "in_progress" or time.monotonic() > deadline:
            return status
        time.sleep(LEASE_SECS / 4)


LEDGER = ""
MODE = ""


def record(name: str) -> None:
    with open(LEDGER, "a", encoding="utf-8") as f:
        f.write(f"{name} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def task_1(x: int) -> int:
    record("task_1")
    if MODE == "repeat-exit" and executions("task_1") == 2:
        os._exit(137)
    return x + 1


def task_2(x: int) -> int:
    record("task_2")
    return x * 2


def executions(name: str) -> int:
    with open(LEDGER, encoding="utf-8") as f:
        return sum(1 for line in f if line.split()[0] == name)


@task(retries=RetryPolicy(max_retries=1, initial_delay_secs=30, backoff_multiplier=1.0))
def task_3(x: int) -> int:
    record("task_3")
    if MODE == "exit":
        os._exit(137)
    if MODE == "sleep":
        print("IN_TASK_3", flush=True)
        time.sleep(60)
    if MODE == "backoff" and executions("task_3") == 1:
        print("FAILED_ONCE", flush=True)
        raise ValueError("first attempt of task_3")
    if MODE == "resume-failing":
        raise ValueError(f"task_3 attempt {executions('task_3')}")
    return x + 10


def task_4(x: int) -> int:
    record("task_4")
    return x * 3


def build() -> Workflow:
    return Flow("crash-demo").then(task_1).then(task_2).then(task_3).then(task_4).build()


def repeat_flow() -> Workflow:
    return Flow("repeat").then(task_1).then(task_2).then(task_1).build()


def many_flow() -> Workflow:
    def one(x: int) -> int:
        record("one")
        return x + 1

    def two(x: int) -> int:
        return x * 2

    def three(x: int) -> int:
        return x - 1

    return Flow("many").then(one).then(two).then(three).build()


def status_json(status: Any) -> str:
    return json.dumps({"status": status.status, "output": status.output, "error": status.error})


def main(argv: list[str]) -> int:
    global LEDGER, MODE
    db, LEDGER, instance_id, MODE = argv
    backend = open_backend(db)
    try:
        wf = build()
        if MODE == "many":
            flow = many_flow()
            done = 0
            for n in range(15):
                st = run_durable_workflow(flow, f"{instance_id}-{n}", n, backend=backend)
                done += st.status == "completed" and st.output == (n + 1) * 2 - 1
            print(done, flush=True)
            return 0
        if MODE.startswith("repeat-"):
            wf = repeat_flow()
        if MODE == "resume-failing":
            with virtual_time():
                status = resume_when_free(wf, instance_id, backend)
        elif MODE in ("resume", "repeat-resume"):
            status = resume_when_free(wf, instance_id, backend)
        else:
            status = run_durable_workflow(wf, instance_id, 1, backend=backend)
        print(status_json(status), flush=True)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
