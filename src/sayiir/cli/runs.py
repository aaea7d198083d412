"""``sayiir runs``, ``sayiir workflows`` and ``sayiir stats``: the operator console's CLI.

    sayiir runs list --status failed --workflow orders -o json
    sayiir runs show order-42
    sayiir runs cancel --status in_progress --workflow orders --dry-run
    sayiir runs fork order-42 --from-step charge --new-id order-42-b

The database comes from ``--url`` or ``$SAYIIR_URL`` (``postgresql://...`` or
``sqlite:///path.db``). Actions go through ``sayiir.console.actions`` (the web console's
too) and are recorded in the audit log with ``--actor`` (default: ``$USER@host``).
Exit statuses: see ``EXIT_CODES`` (docs/console.md).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sayiir.cli._render import FORMATS, Output, jsonable, progress
from sayiir.core.durations import parse_duration
from sayiir.core.queries import PUBLIC_STATUSES, SORT_COLUMNS, RunFilter, RunSort

__all__ = ["EXIT_CODES", "add_commands", "run_command"]

# Documented in docs/console.md; tests pin them.
EXIT_OK = 0
EXIT_ERROR = 1  # bad input, database unreachable or not migrated, usage error
EXIT_NOT_FOUND = 3  # no such run (or definition)
EXIT_REFUSED = 4  # the run's state does not allow the action
EXIT_PARTIAL = 5  # a bulk action was refused for some runs (the others were done)
EXIT_RUN_FAILED = 6  # `runs watch`: the run ended failed or cancelled
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "error: bad input, database unreachable or not migrated",
    EXIT_NOT_FOUND: "no such run or definition",
    EXIT_REFUSED: "the action is not allowed in the run's state",
    EXIT_PARTIAL: "bulk action: refused for some runs, done for the others",
    EXIT_RUN_FAILED: "runs watch: the run ended failed or cancelled",
}

_BULK = ("cancel", "pause", "unpause", "resume", "retry", "signal")
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*d\s*$")


def _when(text: str) -> datetime:
    """An ISO 8601 time (UTC when no zone), or a duration ago: ``30m``, ``2h``, ``7d``."""
    days = _AGO.match(text)
    try:
        if days:
            return datetime.now(UTC) - timedelta(days=float(days.group(1)))
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (2026-01-31T12:00:00Z) nor a duration ago (30m, 2h, 7d)"
        ) from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("SAYIIR_URL"),
        help="postgresql://... or sqlite:///PATH (default: $SAYIIR_URL)",
    )
    p.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
    p.add_argument("--table-prefix", default="sayiir_", help="table prefix (sayiir_)")
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output (table)")


def _filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters")
    g.add_argument(
        "--status",
        action="append",
        choices=PUBLIC_STATUSES,
        default=[],
        help="status (repeatable)",
    )
    g.add_argument("--workflow", help="workflow id")
    g.add_argument("--prefix", help="instance id starts with")
    g.add_argument("--failed-only", action="store_true", help="failed runs only")
    for name, what in (
        ("--created-after", "created at or after"),
        ("--created-before", "created before"),
        ("--updated-after", "updated at or after"),
        ("--updated-before", "updated before"),
    ):
        g.add_argument(name, type=_when, metavar="TIME", help=f"{what} (ISO time or 2h, 7d ago)")


def _actor_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", help="who acts, for the audit log (default: $USER@host)")


def add_commands(commands: Any) -> None:
    """Add ``runs``, ``workflows`` and ``stats`` to the ``sayiir`` parser's subcommands."""
    runs = commands.add_parser("runs", help="list, inspect and act on runs")
    sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=type(runs))

    p = sub.add_parser("list", help="list runs (keyset pages, newest first)")
    _common(p)
    _filters(p)
    p.add_argument("--sort", choices=SORT_COLUMNS, default="created_at")
    p.add_argument("--asc", action="store_true", help="ascending (default: descending)")
    p.add_argument("--limit", type=int, default=50, help="runs per page (50)")
    p.add_argument("--cursor", help="the next page: the cursor printed by the previous one")

    p = sub.add_parser("show", help="one run: its steps, attempts, errors, signals, audit")
    _common(p)
    p.add_argument("instance_id")
    p.add_argument("--steps-limit", type=int, default=500, help="steps per page (500)")
    p.add_argument("--steps-cursor", help="the next page of steps")
    p.add_argument("--failed-only", action="store_true", help="show failed steps only")

    p = sub.add_parser("watch", help="follow a run live until it ends")
    _common(p)
    p.add_argument("instance_id")
    p.add_argument("--interval", type=float, default=1.0, help="poll seconds (1)")
    p.add_argument("--timeout", type=float, help="give up after SECS (exit 1)")

    for name, help_ in (
        ("cancel", "cancel runs (at once if parked, else at the next step)"),
        ("pause", "pause runs"),
        ("unpause", "make paused runs runnable again"),
        ("resume", "run active runs again (queue them for workers, or here with --workflows)"),
        ("retry", "retry failed runs from their last checkpoint with fresh attempts"),
        ("signal", "send a signal: runs signal ID NAME --data JSON (or NAME + filters)"),
    ):
        p = sub.add_parser(name, help=help_)
        _common(p)
        _filters(p)
        _actor_option(p)
        if name == "signal":
            p.add_argument("targets", nargs="+", metavar="[ID] NAME")
            p.add_argument("--data", default="null", help="the payload, as JSON (null)")
        else:
            p.add_argument("instance_id", nargs="?", help="the run (or use filters)")
        if name in ("cancel", "pause"):
            p.add_argument("--reason")
        if name in ("resume", "retry"):
            p.add_argument(
                "--workflows",
                metavar="MODULE:ATTRIBUTE",
                help="import these workflows and execute in-process runs here",
            )
        p.add_argument("--dry-run", action="store_true", help="list the runs, change nothing")
        p.add_argument("--yes", action="store_true", help="confirm a bulk action by filter")

    p = sub.add_parser("fork", help="a new run reusing the checkpoints before a step")
    _common(p)
    _actor_option(p)
    p.add_argument("instance_id")
    p.add_argument("--from-step", required=True, metavar="STEP", help="the first step to rerun")
    p.add_argument("--new-id", help="id of the new run (default: ID-fork-XXXXXXXX)")

    p = commands.add_parser("workflows", help="stored workflow definitions and their hashes")
    _common(p)
    p.add_argument("definition_hash", nargs="?", help="show one definition's structure")

    p = commands.add_parser("stats", help="runs per status over a window, queue depth")
    _common(p)
    p.add_argument("--since", type=_when, default=None, metavar="TIME", help="(1h ago)")
    p.add_argument("--until", type=_when, default=None, metavar="TIME", help="(now)")
    p.add_argument("--bucket", default="5m", help="bucket size: 5m, 1h... (5m)")


def _open(args: argparse.Namespace) -> Any:
    url = args.url
    if not url:
        raise ValueError("no database: pass --url or set SAYIIR_URL")
    if url.startswith(("postgresql://", "postgres://")):
        from sayiir.backends.postgres import PostgresBackend

        # an ops command never changes the schema (`sayiir migrate` does)
        return PostgresBackend(
            url, schema=args.schema, table_prefix=args.table_prefix, auto_migrate=False
        )
    from sayiir.testing._backends import open_backend

    if not os.path.exists(url.removeprefix("sqlite://")):
        raise ValueError(f"no SQLite database at {url}")
    return open_backend(url)


def _filter(args: argparse.Namespace) -> RunFilter:
    return RunFilter(
        status=tuple(args.status),
        workflow_id=args.workflow,
        instance_prefix=args.prefix,
        created_after=args.created_after,
        created_before=args.created_before,
        updated_after=args.updated_after,
        updated_before=args.updated_before,
        failed_only=args.failed_only,
    )


def _has_filter(f: RunFilter) -> bool:
    return f != RunFilter()


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return str(args.actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _stamp(dt: datetime | None) -> str:
    return "" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, n: int = 60) -> str:
    if not text:
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= n else line[: n - 1] + "…"


# -- commands ------------------------------------------------------------------------------


def _list(backend: Any, args: argparse.Namespace, out: Output) -> int:
    f = _filter(args)
    sort = RunSort(args.sort, not args.asc)
    page = backend.list_runs(f, sort, args.cursor, args.limit)
    n, capped = backend.count_runs(f, 1000)
    if out.fmt != "table":
        doc = {"runs": page.runs, "next_cursor": page.next_cursor, "count": n,
               "count_capped": capped}  # fmt: skip
        out.document(doc, page.runs)
        return EXIT_OK
    rows = [
        (r.instance_id, r.workflow_id, r.status, _stamp(r.created_at), _stamp(r.updated_at),
         _short(r.error))
        for r in page.runs
    ]  # fmt: skip
    total = f"{n:,}+" if capped else f"{n:,}"
    out.table(f"{total} run(s)", ["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "ERROR"], rows)
    if page.next_cursor:
        out.line(f"next page: --cursor {page.next_cursor}")
    return EXIT_OK


def _show(backend: Any, args: argparse.Namespace, out: Output) -> int:
    d = backend.run_detail(
        args.instance_id, steps_cursor=args.steps_cursor, steps_limit=args.steps_limit
    )
    if d is None:
        raise LookupError(f"no run '{args.instance_id}'")
    steps = [s for s in d.steps if s.status == "failed"] if args.failed_only else d.steps
    if out.fmt != "table":
        doc = dict(jsonable(d))
        doc["steps"] = jsonable(steps)
        out.document(doc, [jsonable(s) for s in steps])
        return EXIT_OK
    r = d.run
    out.table(
        f"run {r.instance_id}",
        ["FIELD", "VALUE"],
        [
            ("workflow", r.workflow_id),
            ("definition", r.definition_hash[:16]),
            ("status", r.status),
            ("created", _stamp(r.created_at)),
            ("updated", _stamp(r.updated_at)),
            ("reason", d.reason),
            ("waiting for", d.signal_name or (_stamp(d.wake_at) if d.wake_at else None)),
            ("forked from", r.parent_instance_id),
            ("input", d.input_preview),
            ("output", d.output_preview),
            ("error", r.error),
        ],
    )
    rows = []
    for s in steps:
        took = (
            f"{(s.ended_at - s.started_at).total_seconds():.3f}s"
            if s.started_at and s.ended_at
            else ""
        )
        last = s.attempts[-1].error if s.attempts else None
        rows.append(
            (s.key, s.task_id or s.kind, s.status, len(s.attempts) or "", _stamp(s.started_at),
             took, _short(last) if last else _short(s.output_preview))
        )  # fmt: skip
    out.table(
        "steps", ["KEY", "TASK", "STATUS", "ATTEMPTS", "STARTED", "TOOK", "ERROR/OUTPUT"], rows
    )
    if d.steps_next_cursor:
        out.line(f"more steps: --steps-cursor {d.steps_next_cursor}")
    for s in steps:
        for a in s.attempts:
            if a.outcome == "failed" and (a.traceback or a.error):
                out.line(f"\n{s.key} attempt {a.attempt} failed:\n{a.traceback or a.error}")
    if d.signals:
        out.table(
            "signals",
            ["NAME", "STATE", "AT", "PAYLOAD"],
            [(g.name, g.state, _stamp(g.at), g.payload_preview) for g in d.signals],
        )
    if d.children:
        out.table("forks", ["ID", "STATUS"], [(c.instance_id, c.status) for c in d.children])
    if d.audit:
        out.table(
            "audit",
            ["AT", "ACTOR", "ACTION", "DETAIL"],
            [(_stamp(e.at), e.actor, e.action, json.dumps(e.detail)) for e in d.audit],
        )
    return EXIT_OK


def _watch(backend: Any, args: argparse.Namespace, out: Output) -> int:
    """Print each change of the run until it ends. Polls ``get_instance`` every
    ``--interval``; a backend that announces work (PostgreSQL LISTEN/NOTIFY on its queue
    channel, the in-memory backend) wakes the loop early."""
    wake = threading.Event()
    subscribe = getattr(backend, "subscribe", None)
    unsubscribe: Callable[[], None] = subscribe(wake.set) if subscribe is not None else _noop
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    last: tuple[Any, ...] | None = None
    try:
        while True:
            rec = backend.get_instance(args.instance_id)
            if rec is None:
                raise LookupError(f"no run '{args.instance_id}'")
            seen = (rec.status, rec.updated_at, rec.signal_name, rec.wake_at, rec.error)
            if seen != last:
                last = seen
                _watch_line(out, rec)
            if rec.status.value in ("completed", "failed", "cancelled"):
                return EXIT_OK if rec.status.value == "completed" else EXIT_RUN_FAILED
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run '{args.instance_id}' still {rec.status.value}")
            wake.wait(args.interval)
            wake.clear()
    finally:
        unsubscribe()


def _noop() -> None:
    return None


def _watch_line(out: Output, rec: Any) -> None:
    from sayiir.core.queries import from_epoch, public_status

    status = public_status(rec.status.value)
    doc = {
        "instance_id": rec.instance_id,
        "status": status,
        "updated_at": from_epoch(rec.updated_at),
        "signal_name": rec.signal_name,
        "wake_at": None if rec.wake_at is None else from_epoch(rec.wake_at),
        "error": rec.error,
    }
    if out.fmt != "table":
        out.document(doc) if out.fmt == "jsonl" else out.line(json.dumps(jsonable(doc)))
        return
    extra = rec.signal_name or (_stamp(doc["wake_at"]) if rec.wake_at else "") or _short(rec.error)
    out.line(f"{_stamp(doc['updated_at'])}  {status:<16} {extra}".rstrip())


def _workflows_arg(args: argparse.Namespace) -> list[Any]:
    target = getattr(args, "workflows", None)
    if not target:
        return []
    from sayiir.cli.app import load_workflows

    return load_workflows(target)


def _act(backend: Any, args: argparse.Namespace, out: Output) -> int:
    from sayiir.console import actions

    name = args.runs_command
    if name == "fork":
        result = actions.fork(
            backend, args.instance_id, args.from_step, actor=_actor(args), new_id=args.new_id
        )
        return _result(out, result)
    iid, options = _options(args)
    f = _filter(args)
    if iid is not None:
        if _has_filter(f):
            raise ValueError("give a run id or filters, not both")
        if args.dry_run:
            out.line(f"would {name} run '{iid}'") if out.fmt == "table" else out.document(
                {"action": name, "dry_run": True, "matched": [iid], "done": [], "refused": {}}
            )
            return EXIT_OK
        fn = getattr(actions, name)
        actor = _actor(args)
        if name == "signal":
            result = fn(backend, iid, options["name"], options["payload"], actor=actor)
        else:
            result = fn(backend, iid, actor=actor, **options)
        return _result(out, result)
    if not _has_filter(f):
        raise ValueError(f"runs {name} needs a run id or at least one filter (see --help)")
    if not args.dry_run and not args.yes:
        raise ValueError(
            f"runs {name} by filter changes every matching run: preview them with --dry-run, "
            "then confirm with --yes"
        )
    return _bulk(backend, args, out, name, f, options)


def _options(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The run id (``None``: by filter) and the action's own options."""
    name = args.runs_command
    options: dict[str, Any] = {}
    iid = getattr(args, "instance_id", None)
    if name == "signal":
        if len(args.targets) > 2:
            raise ValueError("runs signal takes ID NAME (or NAME with filters)")
        iid, signal_name = args.targets if len(args.targets) == 2 else [None, args.targets[0]]
        try:
            options = {"name": signal_name, "payload": json.loads(args.data)}
        except json.JSONDecodeError as exc:
            raise ValueError(f"--data is not valid JSON: {exc}") from None
    if name in ("cancel", "pause"):
        options["reason"] = args.reason
    if name in ("resume", "retry"):
        options["workflows"] = _workflows_arg(args)
    return iid, options


def _bulk(
    backend: Any,
    args: argparse.Namespace,
    out: Output,
    name: str,
    f: RunFilter,
    options: dict[str, Any],
) -> int:
    from sayiir.console import actions

    with progress(f"{name}", None, not args.dry_run) as advance:
        result = actions.bulk(
            backend, name, f, actor=_actor(args), dry_run=args.dry_run,
            progress=lambda done, total: advance(1), **options,
        )  # fmt: skip
    if out.fmt != "table":
        out.document(result, [*result.done, *({"instance_id": k, "refused": v}
                                              for k, v in result.refused.items())])  # fmt: skip
    elif args.dry_run:
        out.table(
            f"would {name} {len(result.matched)} run(s)", ["ID"], [(i,) for i in result.matched]
        )
    else:
        rows = [(r.instance_id, r.message) for r in result.done]
        rows += [(k, f"refused: {v}") for k, v in result.refused.items()]
        out.table(f"{name}: {len(result.done)} done, {len(result.refused)} refused",
                  ["ID", "RESULT"], rows)  # fmt: skip
    return EXIT_PARTIAL if result.refused else EXIT_OK


def _result(out: Output, result: Any) -> int:
    if out.fmt != "table":
        out.document(result)
    else:
        out.line(f"{result.instance_id}: {result.message}")
    return EXIT_OK


def _definitions(backend: Any, args: argparse.Namespace, out: Output) -> int:
    if args.definition_hash:
        info = backend.get_definition(args.definition_hash)
        if info is None:
            raise LookupError(f"no definition with hash {args.definition_hash!r}")
        if out.fmt == "table":
            out.line(json.dumps(info.structure, indent=2))
        else:
            out.document(info)
        return EXIT_OK
    infos = backend.list_definitions()
    if out.fmt != "table":
        out.document({"definitions": infos}, infos)
        return EXIT_OK
    out.table(
        f"{len(infos)} definition(s)",
        ["HASH", "WORKFLOW", "FIRST SEEN", "STEPS"],
        [
            (i.definition_hash[:16], i.workflow_id, _stamp(i.first_seen),
             len(i.structure.get("root", {}).get("steps", [])))
            for i in infos
        ],
    )  # fmt: skip
    return EXIT_OK


def _stats(backend: Any, args: argparse.Namespace, out: Output) -> int:
    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(hours=1)
    bucket = parse_duration(args.bucket)
    if not bucket > 0:
        raise ValueError("--bucket must be a positive duration (5m, 1h)")
    counts = backend.status_counts(since, until, bucket)
    queue = backend.queue_stats()
    if out.fmt != "table":
        doc = {
            "window_start": counts.window_start,
            "window_end": counts.window_end,
            "totals": counts.totals,
            "buckets": [{"start": b, "status": s, "count": n} for b, s, n in counts.buckets],
            "queue": queue,
        }
        out.document(doc)
        return EXIT_OK
    out.table(
        f"runs created {_stamp(since)} .. {_stamp(until)} (UTC)",
        ["STATUS", "RUNS"],
        sorted(counts.totals.items()),
    )
    if queue is not None:
        age = "" if queue.oldest_ready_age_secs is None else f"{queue.oldest_ready_age_secs:.1f}s"
        out.table(
            "worker queue",
            ["READY", "CLAIMED", "OLDEST READY"],
            [(queue.ready, queue.claimed, age)],
        )
    return EXIT_OK


_COMMANDS: dict[str, Callable[[Any, argparse.Namespace, Output], int]] = {
    "list": _list,
    "show": _show,
    "watch": _watch,
}


def run_command(args: argparse.Namespace) -> int:
    """Run ``runs ...``, ``workflows`` or ``stats``; map refusals to the exit codes."""
    from sayiir.console.actions import ActionError

    out = Output(args.output)
    backend = _open(args)
    try:
        if args.command == "workflows":
            return _definitions(backend, args, out)
        if args.command == "stats":
            return _stats(backend, args, out)
        command = _COMMANDS.get(args.runs_command, _act)
        return command(backend, args, out)
    except ActionError as exc:
        _error(args, str(exc))
        return EXIT_NOT_FOUND if exc.not_found else EXIT_REFUSED
    except LookupError as exc:
        _error(args, str(exc.args[0]) if exc.args else str(exc))
        return EXIT_NOT_FOUND
    except TimeoutError as exc:
        _error(args, str(exc))
        return EXIT_ERROR
    finally:
        backend.close()


def _error(args: argparse.Namespace, message: str) -> None:
    import sys

    name = args.command if args.command != "runs" else f"runs {args.runs_command}"
    print(f"sayiir {name}: {message}", file=sys.stderr)
