"""The ``sayiir`` command: schema migrations from a deploy step.

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
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with status 1, like every other error of this command."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


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
    return parser


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

    try:
        return _migrate(args)
    except (WorkflowError, ValueError, TypeError, ImportError) as exc:
        # Our errors are already redacted (BackendError never carries the password).
        print(f"sayiir {args.command}: error: {exc}", file=sys.stderr)
        return 1
