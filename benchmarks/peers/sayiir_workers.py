"""Worker mode: N worker processes drain runs submitted through ``WorkflowClient``.

Runs under this repo's package and under the reference ``sayiir==1.0.0``::

    python -m benchmarks.peers.sayiir_workers drive --workload linear --size 4 --runs 2000 \
        --workers 2 --url postgresql://... --workdir /tmp/w

``drive`` starts the ``serve`` processes (each a ``Worker`` on its own ``PostgresBackend``, or
``SqliteBackend`` on one file with ``--backend sqlite --path FILE``)
and waits until every one is connected, then submits the runs, one after the other (or, with
``--rate``, open-loop: run ``i`` at ``i / rate`` seconds, whatever the workers do), and waits
until every run's last task has run. Then it checks every run through ``client.status``: it
must be ``completed`` with the expected output, and the clock stops when the last run is
seen completed (its final commit), not at the last task body. Every task appends
``instance task start end`` to its worker's ``timings-<n>.txt``; the driver writes
``submits.txt`` (``instance submitted_at``, taken when ``submit`` returned) and, for the
signal workload, the
signalling process writes ``signals.txt``. The orchestrator computes pickup and end-to-end
latencies from these files. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sayiir
from benchmarks.peers.sayiir_run import NotAvailable, make_backend
from benchmarks.shapes import Recorder, expected, final_task, initial, tasks_per_run
from benchmarks.workloads import build

_FINISHED = ("completed", "failed", "cancelled")


class HelperFailed(Exception):
    """A worker or the signalling process did not start; the message is its last error line."""


def _instance_id() -> str:
    ctx = sayiir.get_task_context()
    return "?" if ctx is None else str(ctx.instance_id)


def serve(args: argparse.Namespace) -> None:
    from sayiir.worker import Worker

    recorder = Recorder(args.timings, _instance_id)
    wf = build(args.workload, args.size, recorder.wrap)
    backend = make_backend(args.backend, args.url, args.path)
    options: dict[str, Any] = {"poll_interval": args.poll, "claim_ttl": args.ttl}
    if "max_concurrent_tasks" in inspect.signature(Worker).parameters:
        options["max_concurrent_tasks"] = 1
    handle = Worker(f"bench-{args.id}", backend, **options).start([wf])
    print("ready", flush=True)
    sys.stdin.readline()  # "stop" or EOF
    handle.shutdown()
    handle.join()
    recorder.close()
    print("stopped", flush=True)


class Progress:
    """Reads the worker timing files as they grow; counts runs whose last task ran."""

    def __init__(self, files: list[Path], final: str) -> None:
        self.files = files
        self.offsets = [0] * len(files)
        self.final = final
        self.done: set[str] = set()
        self.started: set[str] = set()
        self.ends: dict[str, float] = {}  # instance -> end of its final task
        self.changed = time.monotonic()

    def poll(self) -> None:
        for n, path in enumerate(self.files):
            if not path.exists():
                continue
            with path.open() as f:
                f.seek(self.offsets[n])
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            if complete:
                self.changed = time.monotonic()
            self.offsets[n] += len(complete)
            for line in complete.splitlines():
                instance, task, _, end = line.split()
                if task == self.final:
                    self.done.add(instance)
                    self.ends[instance] = float(end)
                elif task == "first":
                    self.started.add(instance)

    def wait(self, count: int, which: str, deadline: float, stall: float) -> bool:
        """Until ``count`` runs reached ``which``; False at the deadline or after ``stall``
        seconds without a single task finishing."""
        self.changed = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - self.changed < stall:
            self.poll()
            if len(getattr(self, which)) >= count:
                return True
            time.sleep(0.01)
        return False


def _spawn(cmd: list[str], errors: Path) -> subprocess.Popen[str]:
    """Start a helper process; its stderr goes to ``errors`` (read back when it fails)."""
    with errors.open("w") as err:
        return subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )


def _expect(proc: subprocess.Popen[str], word: str, errors: Path) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != word:
        lines = errors.read_text().strip().splitlines() if errors.exists() else []
        raise HelperFailed(lines[-1] if lines else f"expected {word!r}, got {line!r}")


def _tell(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(word + "\n")
    proc.stdin.flush()


def drive(args: argparse.Namespace) -> dict[str, Any]:
    from sayiir import WorkflowClient
    from sayiir.worker import Worker  # noqa: F401 -- n/a when the worker does not import

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backend = make_backend(args.backend, args.url, args.path)
    client = WorkflowClient(backend)
    wf = build(args.workload, args.size)
    base = [sys.executable, "-m", "benchmarks.peers.sayiir_workers"]
    common = ["--workload", args.workload, "--size", str(args.size), "--url", args.url]
    common += ["--backend", args.backend, "--path", args.path]
    files = [workdir / f"timings-{n}.txt" for n in range(args.workers)]
    workers = []
    for n in range(args.workers):
        opts = ["--id", str(n), "--timings", str(files[n]), "--poll", str(args.poll)]
        cmd = [*base, "serve", *common, *opts, "--ttl", str(args.ttl)]
        workers.append(_spawn(cmd, workdir / f"worker-{n}.err"))
    tag = f"{args.prefix}-{os.getpid()}-{time.time_ns()}"
    signaller = None
    if args.workload == "signal":
        sig = [sys.executable, "-m", "benchmarks.peers.sayiir_signal", "--mode", args.backend]
        sig += ["--url", args.url, "--path", args.path, "--prefix", tag, "--runs", str(args.runs)]
        signaller = _spawn([*sig, "--times", str(workdir / "signals.txt")], workdir / "sig.err")
    try:
        for n, proc in enumerate(workers):
            _expect(proc, "ready", workdir / f"worker-{n}.err")
        if signaller is not None:
            _expect(signaller, "ready", workdir / "sig.err")
        return _submit_and_wait(args, client, wf, tag, files, signaller, workdir)
    finally:
        helpers = [*workers, *([signaller] if signaller else [])]
        for proc in helpers:
            try:  # workers read "stop"; the signalling process reads EOF
                if proc in workers:
                    _tell(proc, "stop")
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
        for proc in helpers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _submit_and_wait(
    args: argparse.Namespace,
    client: Any,
    wf: Any,
    tag: str,
    files: list[Path],
    signaller: subprocess.Popen[str] | None,
    workdir: Path,
) -> dict[str, Any]:
    progress = Progress(files, final_task(args.workload, args.size))
    deadline = time.monotonic() + args.timeout
    lines = []
    t_go = time.time()
    for i in range(args.runs):
        if args.rate:
            due = t_go + i / args.rate
            if (wait := due - time.time()) > 0:
                time.sleep(wait)
        instance = f"{tag}-{i}"
        client.submit(wf, instance, initial(args.workload, i))
        lines.append(f"{instance} {time.time():.6f}\n")
    t_submitted = time.time()
    (workdir / "submits.txt").write_text("".join(lines))
    ok = True
    if signaller is not None:
        ok = progress.wait(args.runs, "started", deadline, args.stall)
        _tell(signaller, "go")
        _expect(signaller, "done", workdir / "sig.err")
    ok = ok and progress.wait(args.runs, "done", deadline, args.stall)
    verdict = _verify(args, client, tag, progress, deadline) if ok else None
    result: dict[str, Any] = {
        "status": "ok" if ok else "error",
        "engine_version": getattr(sayiir, "__version__", "?"),
        "runs": args.runs,
        "tasks": args.runs * tasks_per_run(args.workload, args.size),
        "workers": args.workers,
        "t_go": t_go,
        "submit_seconds": round(t_submitted - t_go, 6),
        "workdir": str(workdir),
    }
    if args.rate:
        result["rate"] = args.rate
    if not ok:
        result["reason"] = (
            f"stalled: {len(progress.done)} of {args.runs} runs finished, "
            f"no task ran for {args.stall:.0f} s"
        )
    elif isinstance(verdict, str):
        result["status"] = "error"
        result["reason"] = verdict
    else:
        result["t_end"] = verdict
    return result


def _verify(
    args: argparse.Namespace, client: Any, tag: str, progress: Progress, deadline: float
) -> float | str:
    """Every run completed with its expected output: the time the last one was seen so (the
    clock's end), or what was wrong. The run whose final task ended last is watched first, so
    the end is its commit plus one status read; a run seen unfinished later moves it."""
    order = sorted(range(args.runs), key=lambda i: -progress.ends.get(f"{tag}-{i}", 0.0))
    t_end = 0.0
    for n, i in enumerate(order):
        instance, want = f"{tag}-{i}", expected(args.workload, args.size, i)
        waited = False
        while (status := client.status(instance)).status not in _FINISHED:
            if time.monotonic() > deadline:
                return f"run {instance} still {status.status} at the deadline"
            waited = True
            time.sleep(0.0005)
        if n == 0 or waited:
            t_end = time.time()
        if status.status != "completed" or status.output != want:
            return f"run {instance}: {status.status}, output {status.output!r} (want {want!r})"
    return t_end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["drive", "serve"])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--url", default="", help="PostgreSQL URL (--backend postgres)")
    parser.add_argument("--path", default="", help="SQLite file (--backend sqlite)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workdir", default="/tmp/sayiir-bench-workers")
    parser.add_argument("--poll", type=float, default=0.1, help="worker poll_interval (s)")
    parser.add_argument("--ttl", type=float, default=30.0, help="worker claim_ttl (s)")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--stall", type=float, default=20.0, help="give up after idle seconds")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: runs/s (0: all now)")
    parser.add_argument("--prefix", default="w")
    parser.add_argument("--id", default="0")
    parser.add_argument("--timings", default="")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
        return
    try:
        result = drive(args)
    except NotAvailable as exc:
        result = {"status": "n/a", "reason": str(exc)}
    except ImportError as exc:
        result = {"status": "n/a", "reason": f"worker does not import ({exc})"}
    except HelperFailed as exc:
        result = {"status": "n/a", "reason": f"a worker process did not start: {exc}"}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
