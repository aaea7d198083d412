"""Child process of ``test_one_execution_processes.py``: one execution of a durable run.

Usage: ``python execution_worker.py DB LEDGER INSTANCE_ID MODE DIR`` where DB is a SQLite file
or a ``postgresql://`` URL, DIR a directory for hand-shake files, and MODE is

* ``park``    start the race flow; it parks at its delay; print the status as JSON;
* ``race``    create ``DIR/ready-<pid>``, wait for ``DIR/go``, resume; print the status;
* ``stall``   start the stall flow; task ``slow`` prints ``IN_SLOW`` and waits for
  ``DIR/go`` (the parent SIGSTOPs the process meanwhile); task ``last`` prints
  ``LATE_TASK`` and sleeps (it must never run here); a refused write prints
  ``REFUSED <message>`` and exits 3;
* ``recover`` resume until the run is no longer held by another execution; print the status.

Every task body appends ``<task> <pid>`` to LEDGER (flushed and fsynced) before its work.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sayiir import Flow, Workflow, resume_workflow, run_durable_workflow
from sayiir.errors import RunReplacedError

LEASE_SECS = 1.0
LEDGER = ""
MODE = ""
DIR = Path(".")


def open_backend(db: str) -> Any:
    if db.startswith(("postgresql://", "postgres://")):
        from sayiir import PostgresBackend

        return PostgresBackend(db, lease_secs=LEASE_SECS)
    from sayiir.backends.sqlite import SqliteBackend

    return SqliteBackend(db, lease_secs=LEASE_SECS)


def record(name: str) -> None:
    with open(LEDGER, "a", encoding="utf-8") as f:
        f.write(f"{name} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def wait_for_file(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(str(path))
        time.sleep(0.005)


# -- the race flow -----------------------------------------------------------------------------


def first(x: int) -> int:
    record("first")
    return x + 1


def second(x: int) -> int:
    record("second")
    time.sleep(0.3)  # a window for the other resumer to run it too, if nothing stopped it
    return x * 10


def third(x: int) -> int:
    record("third")
    time.sleep(0.3)
    return x + 3


def race_flow() -> Workflow:
    return Flow("race").then(first).delay("nap", 0.3).then(second).then(third).build()


# -- the stall flow ----------------------------------------------------------------------------


def begin(x: int) -> int:
    record("begin")
    return x


def slow(x: int) -> dict[str, int]:
    record("slow")
    if MODE == "stall":
        print("IN_SLOW", flush=True)
        wait_for_file(DIR / "go", timeout=120)
    return {"slow_by": os.getpid()}


def last(x: dict[str, int]) -> dict[str, int]:
    record("last")
    if MODE == "stall":
        print("LATE_TASK", flush=True)
        time.sleep(60)
    return {**x, "last_by": os.getpid()}


def stall_flow() -> Workflow:
    return Flow("stall").then(begin).then(slow).then(last).build()


def status_json(status: Any) -> str:
    return json.dumps({"status": status.status, "output": status.output, "error": status.error})


def resume_when_free(wf: Workflow, instance_id: str, backend: Any) -> Any:
    """Resume; while another execution holds the run (its lease is live), try again."""
    deadline = time.monotonic() + 60
    while True:
        status = resume_workflow(wf, instance_id, backend)
        if status.status != "in_progress" or time.monotonic() > deadline:
            return status
        time.sleep(LEASE_SECS / 4)


def main(argv: list[str]) -> int:
    global LEDGER, MODE, DIR
    db, LEDGER, instance_id, MODE, directory = argv
    DIR = Path(directory)
    backend = open_backend(db)
    try:
        if MODE == "park":
            status = run_durable_workflow(race_flow(), instance_id, 1, backend=backend)
        elif MODE == "race":
            (DIR / f"ready-{os.getpid()}").touch()
            wait_for_file(DIR / "go")
            status = resume_workflow(race_flow(), instance_id, backend)
        elif MODE == "stall":
            try:
                status = run_durable_workflow(stall_flow(), instance_id, 1, backend=backend)
            except RunReplacedError as exc:
                print(f"REFUSED {exc}", flush=True)
                return 3
        else:
            flow = race_flow() if MODE == "recover-race" else stall_flow()
            status = resume_when_free(flow, instance_id, backend)
        print(status_json(status), flush=True)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
