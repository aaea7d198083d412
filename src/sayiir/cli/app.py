"""The ``sayiir`` command: schema migrations from a deploy step, workers, and retention.

    sayiir worker myapp.flows:workflows --url postgresql://db/sayiir --concurrency 4
    sayiir retention postgresql://db/sayiir --older-than-days 30      # e.g. from cron
    sayiir history postgresql://db/sayiir order-42 > order-42.json     # for testing.replay
    sayiir scheduler postgresql://db/sayiir                            # fire cron schedules
    sayiir schedules postgresql://db/sayiir [pause|resume|delete|trigger|backfill ID]

``PostgresBackend`` migrates on first use; teams whose runtime role may not change the
schema (``auto_migrate=False``) apply migrations here instead::

    sayiir migrate postgresql://admin@db/sayiir --schema sayiir
    sayiir migrate postgresql://admin@db/sayiir --dry-run > pending.sql

Exit status 0 on success, 1 on any error; errors go to stderr and never show the password
(prefer ``PGPASSWORD`` or ``~/.pgpass`` over a password in the URL: command lines are
visible to other users of the machine).
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from sayiir.cli.schedules import add_commands as add_schedule_commands
from sayiir.cli.schedules import scheduler, schedules

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with status 1, like every other error of this command."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)  # usage errors may quote an argument: a URL, say
        self.exit(1, f"{self.prog}: error: {_redact(message)}\n")


def _redact(text: str) -> str:
    """``text`` without URL passwords or ``*password*=`` values (psycopg is not loaded)."""
    from sayiir.backends.postgres._conninfo import redact

    return redact(text)


def _parser() -> _Parser:
    parser = _Parser(prog="sayiir", description="sayiir durable workflows: administration.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the PostgreSQL tables",
        description="Apply pending schema migrations (what PostgresBackend does on first use).",
    )
    migrate.add_argument("url", help="postgresql://[user[:password]@]host[:port]/database")
    migrate.add_argument("--schema", default="public", help="schema of the tables (public)")
    migrate.add_argument(
        "--table-prefix", default="sayiir_", help="prefix of the table names (sayiir_)"
    )
    migrate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SQL of the pending migrations instead of applying them",
    )
    migrate.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECS",
        help="how long to retry while the database is unreachable (10)",
    )
    retention = commands.add_parser(
        "retention",
        help="delete old finished runs",
        description="Delete completed, failed and cancelled runs that finished more than N "
        "days ago, with their checkpoints, task executions and consumed signal events; in "
        "batches, each batch its own transaction.",
    )
    retention.add_argument("url", help="postgresql://[user[:password]@]host[:port]/database")
    retention.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="N",
        help="delete runs that finished more than N days ago (fractions allowed)",
    )
    retention.add_argument(
        "--batch-size", type=int, default=1000, metavar="B", help="runs per batch (1000)"
    )
    retention.add_argument("--schema", default="public", help="schema of the tables (public)")
    retention.add_argument(
        "--table-prefix", default="sayiir_", help="prefix of the table names (sayiir_)"
    )
    retention.add_argument(
        "--dry-run", action="store_true", help="print how many runs would be deleted"
    )
    retention.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECS",
        help="how long to retry while the database is unreachable (10)",
    )
    history = commands.add_parser(
        "history",
        help="export a run's history as JSON",
        description="Print the history of one run (record, checkpoints, attempts) as JSON, "
        "for sayiir.testing.replay: check a code change against real runs before deploying.",
    )
    history.add_argument("url", help="postgresql://... or sqlite:///PATH (or a SQLite file path)")
    history.add_argument("instance_id", help="the run's instance id")
    history.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
    history.add_argument("--table-prefix", default="sayiir_", help="table prefix (sayiir_)")
    history.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    worker = commands.add_parser(
        "worker",
        help="run a worker that executes submitted workflows",
        description="Serve the workflows found at MODULE:ATTRIBUTE until SIGTERM or SIGINT; "
        "running tasks finish (and are checkpointed) before the process exits.",
    )
    worker.add_argument(
        "target",
        metavar="MODULE:ATTRIBUTE",
        help="a Workflow, a list of them, or a function returning them (e.g. app.flows:workflows)",
    )
    worker.add_argument(
        "--url",
        default=os.environ.get("SAYIIR_DATABASE_URL"),
        help="postgresql:// URL of the shared database (default: $SAYIIR_DATABASE_URL)",
    )
    worker.add_argument("--schema", default="public", help="schema of the tables (public)")
    worker.add_argument("--table-prefix", default="sayiir_", help="table prefix (sayiir_)")
    worker.add_argument("--id", dest="worker_id", help="worker id (default: <host>-<pid>)")
    worker.add_argument("--concurrency", type=int, default=1, help="tasks run at once (1)")
    worker.add_argument("--poll-interval", type=float, default=5.0, metavar="SECS")
    worker.add_argument("--claim-ttl", type=float, default=300.0, metavar="SECS")
    worker.add_argument("--tags", default="", help="comma-separated task tags this worker serves")
    worker.add_argument(
        "--max-claim-attempts",
        type=int,
        default=5,
        metavar="N",
        help="fail (dead-letter) a run whose task was claimed N times without an outcome, "
        "its workers killed or failing in the engine every time (5)",
    )
    worker.add_argument(
        "--outage-timeout",
        type=float,
        default=300.0,
        metavar="SECS",
        help="exit with status 1 when the database stays unreachable, or refuses the "
        "credentials, this long (300)",
    )
    worker.add_argument("--log-level", default="info", help="debug, info, warning (info)")
    add_schedule_commands(commands)
    return parser


def _load_workflows(target: str) -> list[Any]:
    """Import ``module:attribute`` and return the workflows it names."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected MODULE:ATTRIBUTE (e.g. app.flows:workflows), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory's modules
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if callable(value) and not hasattr(value, "_inner"):
        value = value()
    workflows = list(value) if isinstance(value, list | tuple) else [value]
    for wf in workflows:
        if not hasattr(wf, "_inner"):
            raise TypeError(f"{target} must name Workflow objects, found {type(wf).__name__}")
    return workflows


def _worker(args: argparse.Namespace) -> int:
    from sayiir.backends.postgres import PostgresBackend
    from sayiir.distributed.worker import Worker
    from sayiir.observability.tracing import init_tracing

    if not args.url:
        raise ValueError("--url (or $SAYIIR_DATABASE_URL) is required")
    os.environ.setdefault("SAYIIR_LOG", args.log_level)
    init_tracing()
    workflows = _load_workflows(args.target)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    backend = PostgresBackend(
        args.url,
        schema=args.schema,
        table_prefix=args.table_prefix,
        # One storage call never retries past the worker's own budget (checked by Worker).
        retry_timeout_secs=min(30.0, max(args.outage_timeout, 0.0)),
    )
    worker = Worker(
        worker_id,
        backend,
        poll_interval=args.poll_interval,
        claim_ttl=args.claim_ttl,
        max_concurrent_tasks=args.concurrency,
        tags=tags,
        max_claim_attempts=args.max_claim_attempts,
        outage_timeout=args.outage_timeout,
    )
    with backend:
        worker.run(workflows)  # raises when the worker stops by itself (logged)
    return 0


def _history(args: argparse.Namespace) -> int:
    import json

    from sayiir.testing._backends import open_backend
    from sayiir.testing._history import export_history

    if args.url.startswith(("postgresql://", "postgres://")):
        from sayiir.backends.postgres import PostgresBackend

        backend = PostgresBackend(
            args.url, schema=args.schema, table_prefix=args.table_prefix, auto_migrate=False
        )
    else:
        if not os.path.exists(args.url.removeprefix("sqlite://")):
            raise ValueError(f"no SQLite database at {args.url}")
        backend = open_backend(args.url)
    with backend:
        history = export_history(backend, args.instance_id)
    text = json.dumps(history, indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from sayiir.backends.postgres import PostgresBackend

    backend = PostgresBackend(
        args.url,
        schema=args.schema,
        table_prefix=args.table_prefix,
        auto_migrate=False,
        retry_timeout_secs=args.timeout,
    )
    with backend:
        where = f"{backend!r}"
        if args.dry_run:
            pending = backend.pending_migrations()
            print(f"-- sayiir migrate --dry-run: {len(pending)} pending migration(s) for {where}")
            for name, script in pending:
                print(f"\n-- {name}\n{script}", end="")
            return 0
        applied = backend.migrate()
    if applied:
        print(f"applied {len(applied)} migration(s) to {where}: {', '.join(applied)}")
    else:
        print(f"schema up to date: {where}")
    return 0


def _retention(args: argparse.Namespace) -> int:
    from sayiir.backends.postgres import PostgresBackend

    days = args.older_than_days
    if not days >= 0:
        raise ValueError(f"--older-than-days must be >= 0, not {days:g}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, not {args.batch_size}")
    backend = PostgresBackend(
        args.url,
        schema=args.schema,
        table_prefix=args.table_prefix,
        auto_migrate=False,  # an ops command never changes the schema: `sayiir migrate` does
        retry_timeout_secs=args.timeout,
    )
    with backend:
        where = f"{backend!r}"
        if args.dry_run:
            n = backend.count_finished(days * 86400.0)
            print(f"would delete {n} finished run(s) older than {days:g} day(s) from {where}")
        else:
            n = backend.delete_finished(days * 86400.0, args.batch_size)
            print(f"deleted {n} finished run(s) older than {days:g} day(s) from {where}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status (0 success, 1 error).

    >>> main(["migrate", "postgresql://localhost/sayiir", "--dry-run"])  # doctest: +SKIP
    0
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (1, printed already)
        return exit_.code if isinstance(exit_.code, int) else 1
    from sayiir.errors import WorkflowError

    commands = {"history": _history, "migrate": _migrate, "retention": _retention}
    commands.update(scheduler=scheduler, schedules=schedules)
    command = {**commands, "worker": _worker}[args.command]
    try:
        return command(args)
    except (WorkflowError, ValueError, TypeError, ImportError, AttributeError) as exc:
        # Our errors are redacted already (BackendError never carries the password); a
        # ValueError or TypeError from elsewhere is scrubbed too.
        print(f"sayiir {args.command}: error: {_redact(str(exc))}", file=sys.stderr)
        return 1
