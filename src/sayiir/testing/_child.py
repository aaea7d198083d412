"""The real thing: run a workflow in a child process and SIGKILL it at a named point.

The child runs the workflow with a crash point that, when reached, tells the parent
on its stdout and then waits; the parent kills it with SIGKILL right then. What is in
the database is what a real ``kill -9`` at that point leaves: resume it in the test.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

from sayiir.testing._crash import CrashPoint

__all__ = ["ChildOutcome", "run_in_child"]

_REACHED = "SAYIIR-TESTING-REACHED "
_STATUS = "SAYIIR-TESTING-STATUS "


@dataclass(frozen=True)
class ChildOutcome:
    """What happened to the child: ``killed`` at ``point``, or it finished with ``status``
    (``"completed"``, ``"waiting"`` ...; ``None`` when killed); ``returncode`` as usual
    (``-9`` when killed); ``stderr`` is what the child printed there."""

    killed: bool
    point: str
    status: str | None
    returncode: int
    stderr: str


def run_in_child(
    workflow: str,
    instance_id: str,
    input_data: Any,
    url: str,
    kill_at: str,
    *,
    resume: bool = False,
    timeout: float = 60.0,
) -> ChildOutcome:
    """Start (or with ``resume=True`` resume) a run in a child process; SIGKILL the child
    when the run reaches ``kill_at`` (``"before:TASK"``, ``"during:TASK"``,
    ``"after:TASK"`` or ``"write:N"``, see ``CrashPoint``).

    ``workflow`` is ``"module:attribute"`` (importable by the child: ``sys.path`` is
    passed on), ``url`` a database both processes can open (``sqlite:///PATH`` or
    ``postgresql://...``). ``input_data`` must be JSON-able.

    >>> out = run_in_child("app.flows:order", "o-1", {"total": 39}, url, "after:charge")
    ... # doctest: +SKIP
    >>> out.killed, out.returncode  # doctest: +SKIP
    (True, -9)
    """
    CrashPoint.parse(kill_at)  # a bad point fails here, in the test, with a clear error
    spec = json.dumps(
        {
            "workflow": workflow,
            "instance_id": instance_id,
            "input": input_data,
            "url": url,
            "kill_at": kill_at,
            "resume": resume,
        }
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sayiir.testing._child", spec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []
    out_reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    out_reader.start()
    err_reader = threading.Thread(target=_read_all, args=(proc.stderr, errors), daemon=True)
    err_reader.start()
    killed, status = False, None
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                break
            if line.startswith(_REACHED):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            if line.startswith(_STATUS):
                status = line[len(_STATUS) :].strip()
    except queue.Empty:
        proc.kill()
        raise TimeoutError(
            f"the child running {workflow} did not reach {kill_at} nor finish in {timeout:g}s"
        ) from None
    finally:
        returncode = proc.wait(timeout)
        out_reader.join(timeout)
        err_reader.join(timeout)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    stderr = "".join(errors)
    if not killed and status is None:
        raise RuntimeError(f"the child running {workflow} failed (exit {returncode}):\n{stderr}")
    return ChildOutcome(killed, kill_at, status, returncode, stderr)


def _read_all(stream: Any, out: list[str]) -> None:
    out.append(stream.read())


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class _KillPoint(CrashPoint):
    """In the child: at the point, tell the parent and wait to be killed."""

    def _die(self) -> NoReturn:
        self.fired = True
        sys.stdout.write(f"{_REACHED}{self.name}\n")
        sys.stdout.flush()
        threading.Event().wait()  # the parent's SIGKILL ends this process
        raise AssertionError("unreachable")


def _main(spec_text: str) -> int:
    from sayiir import resume_workflow, run_durable_workflow
    from sayiir.cli.app import load_workflows
    from sayiir.testing._backends import open_backend

    spec = json.loads(spec_text)
    (wf,) = load_workflows(spec["workflow"])
    backend = open_backend(spec["url"])
    point = CrashPoint.parse(spec["kill_at"])
    with _KillPoint(point.kind, point.target):
        if spec["resume"]:
            status = resume_workflow(wf, spec["instance_id"], backend)
        else:
            status = run_durable_workflow(wf, spec["instance_id"], spec["input"], backend=backend)
    sys.stdout.write(f"{_STATUS}{status.status}\n")
    sys.stdout.flush()
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
