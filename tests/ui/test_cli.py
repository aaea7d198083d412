"""`sayiir ui`: the console served by the command, as an operator starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sayiir.backends.sqlite import SqliteBackend
from sayiir.cli.app import main as cli
from tests.ui.demo import populate
from tests.ui.server import Client, free_port


@contextmanager
def console_process(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """Run ``sayiir ui ARGS`` until the block ends; yields (base URL, its first stdout line)."""
    port = free_port()
    command = [sys.executable, "-m", "sayiir.cli", "ui", *args, "--port", str(port)]
    environ = {**os.environ, **(env or {})}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            banner = proc.stdout.readline()
            for line in proc.stderr:  # uvicorn says when it accepts connections
                if "Uvicorn running on" in line:
                    break
            else:
                pytest.fail(f"sayiir ui exited with {proc.wait()}: {banner}")
            yield f"http://127.0.0.1:{port}", banner
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0


def test_sayiir_ui_serves_a_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with SqliteBackend(str(db)) as backend:
        populate(backend, n=3)
    with console_process("--url", f"sqlite:///{db}") as (base, banner):
        assert "read-only" in banner and "127.0.0.1" in banner
        client = Client(base)
        page = client.get("/runs")
        assert page.status == 200 and "order-001" in page.text
        assert client.get("/runs/order-broken").status == 200
        assert client.get("/static/console.css").status == 200


def test_sayiir_ui_with_a_token_says_actions_are_enabled(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with SqliteBackend(str(db)) as backend:
        populate(backend, n=1)
    env = {"SAYIIR_UI_TOKEN": "a-long-enough-token"}
    with console_process("--url", f"sqlite:///{db}", env=env) as (base, banner):
        assert "operator actions enabled" in banner
        assert "Sign in" in Client(base).get("/runs").text


def test_sayiir_ui_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAYIIR_URL", raising=False)
    assert cli(["ui"]) == 1
    assert "--url (or $SAYIIR_URL) is required" in capsys.readouterr().err
    assert cli(["ui", "--url", f"sqlite:///{tmp_path}/nothing.db"]) == 1
    assert "no SQLite database" in capsys.readouterr().err


@pytest.mark.postgres
def test_sayiir_ui_on_postgres_never_shows_the_password_or_the_dsn(pg_dsn: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from sayiir.backends.postgres import PostgresBackend

    with PostgresBackend(pg_dsn, table_prefix="cli_") as backend:  # migrates
        populate(backend, n=2)
    parts = urlsplit(pg_dsn)
    user = parts.username or "postgres"
    secret = "s3cret-never-shown"  # the test server trusts local users: any password works
    url = urlunsplit(parts._replace(netloc=f"{user}:{secret}@{parts.hostname}:{parts.port}"))
    args = ("--url", url, "--table-prefix", "cli_")
    with console_process(*args) as (base, banner):
        assert secret not in banner and "127.0.0.1" in banner
        client = Client(base)
        for path in ("/runs", "/runs/order-000", "/runs/order-broken", "/workflows", "/stats"):
            page = client.get(path)
            assert page.status == 200, path
            assert secret not in page.text and "postgresql://" not in page.text
            assert parts.path.strip("/") not in page.text  # not even the database name
