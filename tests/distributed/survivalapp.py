"""Workflows served by the worker processes of test_worker_survival_processes.py.

Every task appends "<instance> <task> <pid> <event>" to the ledger file named by
$SAYIIR_TEST_LEDGER (one small O_APPEND write per line), so a test sees which process ran
what, and how often, even for a process killed in the middle of its task.
"""

from __future__ import annotations

import os
import signal

from sayiir import Flow, get_task_context, task


def note(event: str = "run") -> None:
    ctx = get_task_context()
    assert ctx is not None
    line = f"{ctx.instance_id} {ctx.task_id} {os.getpid()} {event}\n".encode()
    fd = os.open(os.environ["SAYIIR_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task
def plain(x: int) -> int:
    note()
    return x + 1


@task
def exits(code: int) -> int:
    """What a script's habit does inside a task: ``sys.exit``."""
    note()
    raise SystemExit(code)


@task
def poison(x: int) -> int:
    """Kills its worker process every time it runs (a segfaulting extension, the OOM
    killer): no outcome is ever recorded."""
    note("start")
    os.kill(os.getpid(), signal.SIGKILL)
    return x


plain_flow = Flow("plain").then(plain).build()
exit_flow = Flow("exits").then(plain).then(exits).build()
poison_flow = Flow("poison").then(plain).then(poison).build()

workflows = [plain_flow, exit_flow, poison_flow]
