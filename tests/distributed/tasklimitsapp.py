"""Workflows served by the worker processes of test_task_limits_processes.py.

The limited tasks append "<run> <task> <event> <time> <pid>" lines to the file named by
$SAYIIR_TEST_INTERVALS (one small O_APPEND write per line, so lines never mix), from which
the tests rebuild who ran when. $SAYIIR_TEST_HANG=1 makes ``hold`` hang (a worker to kill
while it holds the task's slot).
"""

from __future__ import annotations

import os
import time
from typing import Any

from sayiir import Flow, RateLimit, get_task_context, task

RATE_N = 4
RATE_PER = 1.0


def stamp(event: str) -> None:
    ctx = get_task_context()
    assert ctx is not None
    line = f"{ctx.instance_id} {ctx.task_id} {event} {time.time():.6f} {os.getpid()}\n"
    fd = os.open(os.environ["SAYIIR_TEST_INTERVALS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@task
def prepare(x: int) -> int:
    return x


@task(max_concurrent=2)
def charge(x: int) -> int:
    stamp("start")
    time.sleep(0.02)
    stamp("end")
    return x


@task
def done(x: int) -> int:
    return x


@task(rate_limit=RateLimit(RATE_N, RATE_PER, name="api"))
def call_api(x: int) -> int:
    stamp("start")
    return x


@task(max_concurrent=1)
def hold(x: int) -> int:
    stamp("start")
    if os.environ.get("SAYIIR_TEST_HANG") == "1":
        time.sleep(600)  # killed meanwhile
    time.sleep(0.05)
    stamp("end")
    return x


capped = Flow("capped").then(prepare).then(charge).then(done).build()
rated = Flow("rated").then(prepare).then(call_api).build()
held = Flow("held").then(hold).build()

workflows: list[Any] = [capped, rated, held]
