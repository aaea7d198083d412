"""``sayiir scheduler`` (fire the schedules of a database) and ``sayiir schedules`` (list and
operate them):

    sayiir scheduler postgresql://db/sayiir
    sayiir schedules postgresql://db/sayiir                      # the table
    sayiir schedules postgresql://db/sayiir pause nightly        # resume, delete, trigger
    sayiir schedules postgresql://db/sayiir backfill nightly \\
        --start 2026-12-01T00:00:00+00:00 --end 2026-12-03T23:59:59+00:00
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime
from typing import Any

__all__ = ["add_commands", "scheduler", "schedules"]

_ACTIONS = ("list", "pause", "resume", "delete", "trigger", "backfill")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="postgresql://... or sqlite:///PATH (or a SQLite file path)")
    parser.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
    parser.add_argument("--table-prefix", default="sayiir_", help="table prefix (sayiir_)")


def add_commands(commands: Any) -> None:
    """Add ``scheduler`` and ``schedules`` to the ``sayiir`` command's subparsers."""
    run = commands.add_parser(
        "scheduler",
        help="fire the cron schedules stored in a database",
        description="Fire the schedules of the database until SIGTERM or SIGINT. Workers fire "
        "them too (unless started with schedules=False); any number of firers may run, each "
        "tick still starts exactly one run.",
    )
    _common(run)
    run.add_argument("--poll-interval", type=float, default=5.0, metavar="SECS")
    ops = commands.add_parser(
        "schedules",
        help="list, pause, resume, delete, trigger or backfill schedules",
        description="List the schedules of a database (default), or operate one of them.",
    )
    _common(ops)
    ops.add_argument("action", nargs="?", default="list", choices=_ACTIONS)
    ops.add_argument("schedule_id", nargs="?", help="the schedule (all actions but list)")
    ops.add_argument("--start", help="backfill: first tick time, ISO 8601 with an offset")
    ops.add_argument("--end", help="backfill: last tick time, ISO 8601 with an offset")


def _open(args: argparse.Namespace) -> Any:
    import os

    url: str = args.url
    if url.startswith(("postgresql://", "postgres://")):
        from sayiir.backends.postgres import PostgresBackend

        return PostgresBackend(url, schema=args.schema, table_prefix=args.table_prefix)
    from sayiir.backends.sqlite import SqliteBackend

    path = url.removeprefix("sqlite://")
    if not os.path.exists(path):
        raise ValueError(f"no SQLite database at {url}")
    return SqliteBackend(path)


def scheduler(args: argparse.Namespace) -> int:
    from sayiir.distributed.schedules import Scheduler

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _open(args) as backend:
        firer = Scheduler(backend, poll_interval=args.poll_interval)
        firer.start()
        while not stop.wait(0.2) and firer.error is None:
            pass
        firer.stop()
        firer.join()
    if firer.error is not None:
        raise firer.error
    return 0


def _when(text: str | None, flag: str) -> datetime:
    if not text:
        raise ValueError(f"backfill needs {flag} (ISO 8601 with an offset)")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{flag} {text!r} has no UTC offset: add one, e.g. +00:00")
    return moment


def schedules(args: argparse.Namespace) -> int:
    from sayiir.distributed.client import WorkflowClient

    if args.action != "list" and not args.schedule_id:
        raise ValueError(f"`sayiir schedules URL {args.action}` needs a schedule id")
    with _open(args) as backend:
        client = WorkflowClient(backend)
        sid = args.schedule_id
        if args.action == "list":
            _table(client.schedules())
        elif args.action == "pause":
            client.pause_schedule(sid)
            print(f"paused {sid}")
        elif args.action == "resume":
            client.resume_schedule(sid)
            print(f"resumed {sid}")
        elif args.action == "delete":
            if not client.delete_schedule(sid):
                raise ValueError(f"no schedule {sid!r}")
            print(f"deleted {sid}")
        elif args.action == "trigger":
            print(client.trigger_schedule(sid))
        else:
            started = client.backfill_schedule(
                sid, _when(args.start, "--start"), _when(args.end, "--end")
            )
            print(f"backfill of {sid}: {len(started)} run(s) started")
            for instance_id in started:
                print(instance_id)
    return 0


def _table(infos: list[Any]) -> None:
    head = ("ID", "WORKFLOW", "CRON", "TIMEZONE", "STATE", "NEXT TICK", "LAST RUN", "FIRED",
            "SKIPPED", "OVERLAP")  # fmt: skip
    rows = [head]
    for s in infos:
        state = "paused" if s.paused else "active"
        if s.buffered_tick is not None:
            state += f" (tick {s.buffered_tick.isoformat()} waits for {s.last_run_id})"
        rows.append((
            s.id, s.workflow_id, s.cron, s.timezone, state,
            "-" if s.paused else s.next_tick.isoformat(), s.last_run_id or "-",
            str(s.fired), str(s.skipped), s.overlap,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
