"""The ``sayiir`` command: schema migrations from a deploy step, workers, and retention.

    sayiir worker myapp.flows:workflows --url postgresql://db/sayiir --concurrency 4
    sayiir retention postgresql://db/sayiir --older-than-days 30      # e.g. from cron
    sayiir history postgresql://db/sayiir order-42 > order-42.json     # for testing.replay
    SAYIIR_UI_TOKEN=... sayiir ui --url postgresql://db/sayiir         # the web console
    sayiir scheduler postgresql://db/sayiir                            # fire cron schedules
    sayiir schedules postgresql://db/sayiir [pause|resume|delete|trigger|backfill ID]

``PostgresBackend`` migrates on first use; teams whose runtime role may not change the
schema (``auto_migrate=False``) apply migrations here instead::

    sayiir migrate postgresql://admin@db/sayiir --schema sayiir
    sayiir migrate postgresql://admin@db/sayiir --dry-run > pending.sql
    sayiir partition postgresql://admin@db/sayiir   # runs by month; retention drops months

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
import time
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


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    """The URL and options of a command that changes the PostgreSQL schema."""
    parser.add_argument("url", help="postgresql://[user[:password]@]host[:port]/database")
    parser.add_argument("--schema", default="public", help="schema of the tables (public)")
    parser.add_argument(
        "--table-prefix", default="sayiir_", help="prefix of the table names (sayiir_)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECS",
        help="how long to retry while the database is unreachable (10)",
    )


def _parser() -> _Parser:
    parser = _Parser(prog="sayiir", description="sayiir durable workflows: administration.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the PostgreSQL tables",
        description="Apply pending schema migrations (what PostgresBackend does on first use).",
    )
    _schema_arguments(migrate)
    migrate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SQL of the pending migrations instead of applying them",
    )
    partition = commands.add_parser(
        "partition",
        help="partition the PostgreSQL tables by month",
        description="Convert runs, task executions and checkpoints to tables range-"
        "partitioned by month of creation, in one transaction (stop the workers first); "
        "retention then drops whole months. Applies pending migrations first.",
    )
    _schema_arguments(partition)
    retention = commands.add_parser(
        "retention",
        help="delete old finished runs",
        description="Delete completed, failed and cancelled runs that finished more than N "
        "days ago, with their checkpoints, task executions and consumed signal events, and "
        "the dedupe keys whose window has passed; in batches, each batch its own transaction.",
    )
    _schema_arguments(retention)
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
    retention.add_argument(
        "--dry-run", action="store_true", help="print how many runs (and keys) would be deleted"
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
    ui = commands.add_parser(
        "ui",
        help="serve the web console",
        description="Serve the operator console (runs, steps, graphs, live updates) over HTTP. "
        "Read-only unless SAYIIR_UI_TOKEN holds an operator token. Needs the ui extra: "
        "pip install 'sayiir[ui]'.",
    )
    ui.add_argument(
        "--url",
        default=os.environ.get("SAYIIR_URL"),
        help="postgresql://... or sqlite:///PATH (default: $SAYIIR_URL)",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    ui.add_argument("--port", type=int, default=8765, help="port (8765)")
    ui.add_argument("--schema", default="public", help="PostgreSQL schema (public)")
    ui.add_argument("--table-prefix", default="sayiir_", help="table prefix (sayiir_)")
    ui.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="ACTION",
        help="never allow this action (cancel, pause, unpause, signal, retry, fork); repeatable",
    )
    ui.add_argument("--log-level", default="info", help="debug, info, warning (info)")
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
        help="postgresql:// URL of the shared database, or sqlite:///PATH for worker processes "
        "on one machine (default: $SAYIIR_DATABASE_URL)",
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
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve metrics for Prometheus at http://0.0.0.0:PORT/metrics (needs sayiir[otel])",
    )
    worker.add_argument("--log-level", default="info", help="debug, info, warning (info)")
    from sayiir.cli.runs import add_commands

    add_commands(commands)
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description='Print a completion script: eval "$(sayiir completion bash)" in ~/.bashrc '
        "(zsh: autoload -U bashcompinit && bashcompinit first).",
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    add_schedule_commands(commands)
    return parser


def load_workflows(target: str) -> list[Any]:
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


def _worker_backend(args: argparse.Namespace) -> Any:
    """PostgreSQL for ``postgresql://`` URLs; SQLite for ``sqlite:///PATH``: worker processes
    on one machine sharing the file."""
    if args.url.startswith("sqlite://"):
        from sayiir.backends.sqlite import SqliteBackend

        path = args.url.removeprefix("sqlite://")
        if not path:
            raise ValueError(f"no database path in {args.url!r}: use sqlite:///PATH")
        return SqliteBackend(path)
    from sayiir.backends.postgres import PostgresBackend

    return PostgresBackend(
        args.url,
        schema=args.schema,
        table_prefix=args.table_prefix,
        # One storage call never retries past the worker's own budget (checked by Worker).
        retry_timeout_secs=min(30.0, max(args.outage_timeout, 0.0)),
    )


def _worker(args: argparse.Namespace) -> int:
    from sayiir.distributed.worker import Worker
    from sayiir.observability.tracing import init_tracing

    if not args.url:
        raise ValueError("--url (or $SAYIIR_DATABASE_URL) is required")
    os.environ.setdefault("SAYIIR_LOG", args.log_level)
    init_tracing()
    workflows = load_workflows(args.target)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    backend = _worker_backend(args)
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
    metrics = None
    if args.metrics_port is not None:
        from sayiir.observability.prometheus import serve_metrics

        metrics = serve_metrics(args.metrics_port, backend)
    try:
        with backend:
            worker.run(workflows)  # raises when the worker stops by itself (logged)
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def _ui(args: argparse.Namespace) -> int:
    try:
        import sayiir.ui
    except ImportError as exc:
        raise ImportError(
            f"`sayiir ui` needs the ui extra ({exc.name} is not installed): "
            "pip install 'sayiir[ui]'"
        ) from None
    if not args.url:
        raise ValueError("--url (or $SAYIIR_URL) is required: postgresql://... or sqlite:///PATH")
    backend = _open_backend(args)
    token = os.environ.get("SAYIIR_UI_TOKEN") or None
    mode = "operator actions enabled" if token else "read-only (set SAYIIR_UI_TOKEN for actions)"
    print(f"sayiir console for {backend!r} on http://{args.host}:{args.port}/ ({mode})", flush=True)
    with backend:
        sayiir.ui.serve(
            backend,
            host=args.host,
            port=args.port,
            token=token,
            disable=args.disable,
            log_level=args.log_level,
        )
    return 0


def _open_backend(args: argparse.Namespace) -> Any:
    """The backend of ``args.url``; an ops command never changes a PostgreSQL schema."""
    if args.url.startswith(("postgresql://", "postgres://")):
        from sayiir.backends.postgres import PostgresBackend

        return PostgresBackend(
            args.url, schema=args.schema, table_prefix=args.table_prefix, auto_migrate=False
        )
    from sayiir.testing._backends import open_backend

    if not os.path.exists(args.url.removeprefix("sqlite://")):
        raise ValueError(f"no SQLite database at {args.url}")
    return open_backend(args.url)


def _history(args: argparse.Namespace) -> int:
    import json

    from sayiir.testing._history import export_history

    backend = _open_backend(args)
    with backend:
        history = export_history(backend, args.instance_id)
    text = json.dumps(history, indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _schema_backend(args: argparse.Namespace) -> Any:
    """The PostgreSQL backend of a schema command (``--schema``, ``--table-prefix``,
    ``--timeout``), which never migrates on its own: the command says what changes."""
    from sayiir.backends.postgres import PostgresBackend

    return PostgresBackend(
        args.url,
        schema=args.schema,
        table_prefix=args.table_prefix,
        auto_migrate=False,
        retry_timeout_secs=args.timeout,
    )


def _migrate(args: argparse.Namespace) -> int:
    backend = _schema_backend(args)
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


def _partition(args: argparse.Namespace) -> int:
    backend = _schema_backend(args)
    with backend:
        where = f"{backend!r}"
        if backend.partition_tables():
            print(f"partitioned the tables of {where} by month")
        else:
            print(f"already partitioned: {where}")
    return 0


def _retention(args: argparse.Namespace) -> int:
    days = args.older_than_days
    if not days >= 0:
        raise ValueError(f"--older-than-days must be >= 0, not {days:g}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, not {args.batch_size}")
    backend = _schema_backend(args)  # never migrates: `sayiir migrate` does
    with backend:
        where = f"{backend!r}"
        now = time.time()  # dedupe windows are the submitters' clock (WorkflowClient.submit)
        if args.dry_run:
            n = backend.count_finished(days * 86400.0)
            print(f"would delete {n} finished run(s) older than {days:g} day(s) from {where}")
            keys = backend.count_expired_dedupe_keys(now)
            print(f"would delete {keys} expired dedupe key(s)")
        else:
            from sayiir.cli._render import progress

            tty = sys.stderr.isatty()
            total = backend.count_finished(days * 86400.0) if tty else None
            with progress("deleting", total, tty) as advance:
                n = backend.delete_finished(days * 86400.0, args.batch_size, progress=advance)
            print(f"deleted {n} finished run(s) older than {days:g} day(s) from {where}")
            keys = 0
            while True:
                purged = backend.purge_dedupe_keys(now, args.batch_size)
                keys += purged
                if purged < args.batch_size:
                    break
            print(f"deleted {keys} expired dedupe key(s)")
    return 0


def _completion(args: argparse.Namespace) -> int:
    from sayiir.cli._completion import bash_script

    sys.stdout.write(bash_script(_parser()))
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
    from sayiir.cli.runs import run_command
    from sayiir.errors import WorkflowError

    commands = {"history": _history, "migrate": _migrate, "retention": _retention, "ui": _ui}
    commands["partition"] = _partition
    commands.update(scheduler=scheduler, schedules=schedules)
    console = {"runs": run_command, "workflows": run_command, "stats": run_command}
    command = {**commands, **console, "worker": _worker, "completion": _completion}[args.command]
    try:
        return command(args)
    except (WorkflowError, ValueError, TypeError, ImportError, AttributeError) as exc:
        # Our errors are redacted already (BackendError never carries the password); a
        # ValueError or TypeError from elsewhere is scrubbed too.
        print(f"sayiir {args.command}: error: {_redact(str(exc))}", file=sys.stderr)
        return 1
