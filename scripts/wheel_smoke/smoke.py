"""Scenarios run by scripts/wheel-smoke inside a fresh venv holding the built wheel.

    python smoke.py core|quickstart|postgres|pydantic|otel|pytest_plugin|ui

It runs from a temporary directory outside the source tree (``SAYIIR_SOURCE_TREE`` names the
tree, so the test can prove that ``sayiir`` was not imported from it). Each scenario prints
what it checked and raises (exit 1) on the first failure. Only the standard library and the
installed wheel (with the extra under test) are used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OPTIONAL = (
    "psycopg",
    "psycopg_pool",
    "pydantic",
    "opentelemetry",
    "starlette",
    "jinja2",
    "uvicorn",
)


def say(message: str) -> None:
    print(f"  ok: {message}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def run(
    cmd: list[str], *, expect: int = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    if proc.returncode != expect:
        raise AssertionError(
            f"{' '.join(cmd[:3])} ... exited {proc.returncode}, expected {expect}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def installed_sayiir() -> Any:
    import sayiir

    location = Path(sayiir.__file__).resolve()
    source = Path(os.environ["SAYIIR_SOURCE_TREE"]).resolve()
    check(not location.is_relative_to(source), f"sayiir imported from the source tree: {location}")
    check(
        location.is_relative_to(Path(sys.prefix).resolve()), f"sayiir not in the venv: {location}"
    )
    check(
        importlib.metadata.version("sayiir") == sayiir.__version__,
        f"metadata version {importlib.metadata.version('sayiir')} != {sayiir.__version__}",
    )
    return sayiir


def scenario_core() -> None:
    """No extra: the core imports and runs on the standard library alone."""
    for name in OPTIONAL:
        check(importlib.util.find_spec(name) is None, f"{name} is installed without its extra")
    say(f"none of {', '.join(OPTIONAL)} is installed")
    sayiir = installed_sayiir()
    say(f"sayiir {sayiir.__version__} imported from {Path(sayiir.__file__).parent}")
    for name in sayiir.__all__:
        if name != "PostgresBackend":  # resolves lazily; its first use needs the extra
            getattr(sayiir, name)
    check(not any(m.split(".")[0] in OPTIONAL for m in sys.modules), "an optional module loaded")
    say(f"every name of sayiir.__all__ resolves ({len(sayiir.__all__)})")
    for backend in ("sqlite", "postgres"):
        files = importlib.resources.files(f"sayiir.backends.{backend}")
        check(files.joinpath("schema.sql").is_file(), f"{backend} schema.sql missing")
        migrations = sorted(p.name for p in files.joinpath("migrations").iterdir())
        check(any(m.startswith("0001_") for m in migrations), f"{backend}: {migrations}")
    say("schema.sql and migrations are package resources")

    flow = sayiir.Flow("core").then(lambda x: x + 1).build()
    check(sayiir.run_workflow(flow, 41) == 42, "run_workflow")
    with sayiir.SqliteBackend(str(HERE / "core.db")) as backend:
        status = sayiir.run_durable_workflow(flow, "core-1", 1, backend=backend)
        check(status.output == 2, f"durable SQLite run: {status}")
    say("in-memory and durable SQLite runs")

    proc = run(
        [bin_path("sayiir"), "migrate", "postgresql://127.0.0.1/none", "--dry-run"], expect=1
    )
    check("sayiir[postgres]" in proc.stderr, f"missing-extra error is unclear: {proc.stderr}")
    say("`sayiir migrate` without the postgres extra says which extra to install")
    run([bin_path("sayiir"), "--help"])
    run([sys.executable, "-m", "sayiir.cli", "--help"])
    say("`sayiir --help` and `python -m sayiir.cli --help`")
    proc = run([bin_path("sayiir"), "ui", "--url", "sqlite:///core.db"], expect=1)
    check("sayiir[ui]" in proc.stderr, f"missing-extra error is unclear: {proc.stderr}")
    say("`sayiir ui` without the ui extra says which extra to install")


def scenario_quickstart() -> None:
    """examples/quickstart.py, copied next to this file, on SQLite."""
    installed_sayiir()
    db = HERE / "quickstart.db"
    first = run([sys.executable, "quickstart.py", str(db)]).stdout
    check("signal sent, resumed -> completed" in first, f"quickstart output:\n{first}")
    check("shipped order order-1001 (approved by alice)" in first, f"quickstart output:\n{first}")
    say("quickstart ran to completion (delay, signal, retry, fork)")
    second = run([sys.executable, "quickstart.py", str(db)]).stdout
    check("already completed by an earlier run" in second, f"second run output:\n{second}")
    say("a second run finds the first one's checkpoints in the file")


def scenario_pytest_plugin() -> None:
    """Wheel + pytest, no extra: a user's test file runs on the plugin loaded from the wheel.

    The test file (smoke_plugin_test.py, copied into a directory of its own) uses the fixtures
    ``sayiir_backend`` and ``virtual_clock`` and the ``sayiir_crash_points`` marker. Without a
    DSN and without psycopg, the PostgreSQL parameter is skipped and memory/SQLite pass.
    """
    check(importlib.util.find_spec("psycopg") is None, "psycopg is installed without its extra")
    sayiir = installed_sayiir()
    user = HERE / "user_tests"
    user.mkdir(exist_ok=True)
    (user / "test_user.py").write_text((HERE / "smoke_plugin_test.py").read_text())
    env = {
        k: v for k, v in os.environ.items() if k not in ("SAYIIR_TEST_POSTGRES_DSN", "PYTHONPATH")
    }
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]

    def run_pytest(*args: str) -> str:
        proc = subprocess.run(
            [*pytest, *args], capture_output=True, text=True, timeout=300, cwd=user, env=env
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"pytest {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}"
            )
        return proc.stdout

    trace = run_pytest("--trace-config", "--collect-only", "-q")
    loaded = [ln for ln in trace.splitlines() if "sayiir.testing.pytest_plugin" in ln]
    check(bool(loaded), f"the plugin is not registered:\n{trace}")
    path = Path(loaded[0].rsplit("from '", 1)[-1].rstrip("'>")).resolve()
    check(path.is_relative_to(Path(sayiir.__file__).resolve().parent), f"plugin from {path}")
    check("site-packages" in path.parts, f"the plugin is not loaded from site-packages: {path}")
    say(f"pytest loads the plugin (entry point pytest11) from {path}")
    fixtures = run_pytest("--fixtures")
    for name in ("sayiir_backend", "virtual_clock", "crash_point"):
        check(name in fixtures, f"fixture {name} not listed by pytest --fixtures:\n{fixtures}")
    say("pytest --fixtures lists sayiir_backend, virtual_clock and crash_point")
    out = run_pytest("-rs", "test_user.py")
    check("7 passed, 3 skipped" in out, f"unexpected pytest outcome:\n{out}")
    check("set SAYIIR_TEST_POSTGRES_DSN to run it" in out, f"no PostgreSQL skip reason:\n{out}")
    say(
        "a user's tests pass on memory and SQLite (crash points, virtual clock); PostgreSQL skipped"
    )


def _database_url(name: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(os.environ["SAYIIR_TEST_POSTGRES_DSN"], dbname=name)


def _admin(statement: str, name: str) -> None:
    """Run ``statement`` (a template with one ``{}``) on the server's maintenance database."""
    import psycopg
    from psycopg import sql

    query = sql.SQL(statement).format(sql.Identifier(name))
    with psycopg.connect(os.environ["SAYIIR_TEST_POSTGRES_DSN"], autocommit=True) as conn:
        conn.execute(query)


def scenario_postgres() -> None:
    """[postgres]: migrate --dry-run, migrate, one durable run, then `sayiir worker` runs."""
    if not os.environ.get("SAYIIR_TEST_POSTGRES_DSN"):
        raise AssertionError("SAYIIR_TEST_POSTGRES_DSN is not set")
    sayiir = installed_sayiir()
    name = f"sayiir_wheel_{secrets.token_hex(4)}"
    _admin("CREATE DATABASE {}", name)
    try:
        _postgres_in(sayiir, name)
    finally:
        _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def _postgres_in(sayiir: Any, name: str) -> None:
    import psycopg

    url = _database_url(name)
    proc = run([bin_path("sayiir"), "migrate", url, "--dry-run"])
    check("pending migration(s)" in proc.stdout and "CREATE TABLE" in proc.stdout, proc.stdout)
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sayiir%'")
        check(tables.fetchone() == (0,), "--dry-run created tables")
    say(f"`sayiir migrate --dry-run` printed the SQL and applied nothing (database {name})")
    proc = run([bin_path("sayiir"), "migrate", url])
    check("applied" in proc.stdout, proc.stdout)
    proc = run([bin_path("sayiir"), "migrate", url])
    check("schema up to date" in proc.stdout, proc.stdout)
    say("`sayiir migrate` applied the migrations, then found the schema up to date")

    import smoke_app  # type: ignore[import-not-found]  # beside this file

    with sayiir.PostgresBackend(url, auto_migrate=False) as backend:
        status = sayiir.run_durable_workflow(smoke_app.flow, "pg-1", 3, backend=backend)
        check(status.output == smoke_app.expected(3), f"PostgreSQL run: {status}")
    say("one durable run on PostgreSQL")

    runs = {f"worker-{i}": i for i in range(5)}
    with sayiir.PostgresBackend(url) as backend:
        client = sayiir.WorkflowClient(backend)
        for instance, value in runs.items():
            client.submit(smoke_app.flow, instance, value)
        log = (HERE / "worker.log").open("w")
        worker = subprocess.Popen(
            [
                bin_path("sayiir"),
                "worker",
                "smoke_app:workflows",
                "--url",
                url,
                "--concurrency",
                "2",
            ],
            cwd=HERE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 180
            pending = dict(runs)
            while pending and time.monotonic() < deadline and worker.poll() is None:
                for instance in list(pending):
                    if client.status(instance).status in ("completed", "failed", "cancelled"):
                        del pending[instance]
                time.sleep(0.2)
            check(worker.poll() is None, f"the worker exited early ({worker.returncode})")
            check(not pending, f"runs not finished within 180 s: {sorted(pending)}")
            for instance, value in runs.items():
                status = client.status(instance)
                check(status.output == smoke_app.expected(value), f"{instance}: {status}")
            say(f"`sayiir worker` ran {len(runs)} submitted runs (fork and join) to completion")
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                code = worker.wait()
            log.close()
    output = (HERE / "worker.log").read_text()
    check(code == 0, f"the worker exited {code} after SIGTERM; its log:\n{output}")
    check("Traceback" not in output, f"the worker logged a traceback:\n{output}")
    say("the worker stopped on SIGTERM with status 0")


def scenario_pydantic() -> None:
    """[pydantic]: a model crosses a durable checkpoint and comes back as the model."""
    import pydantic
    from smoke_models import Order  # type: ignore[import-not-found]  # beside this file

    installed_sayiir()
    from sayiir import Flow, SqliteBackend, run_durable_workflow, task

    @task
    def make(qty: int) -> Order:
        return Order(sku="BOOK", qty=qty)

    @task
    def count(order: Order) -> int:
        check(isinstance(order, Order), f"got {type(order).__name__}, not Order")
        return int(order.qty) * 2

    flow = Flow("pyd").then(make).then(count).build()
    with SqliteBackend(str(HERE / "pydantic.db")) as backend:
        status = run_durable_workflow(flow, "pyd-1", 21, backend=backend)
        check(status.output == 42, f"pydantic run: {status}")
    say(f"pydantic {pydantic.VERSION} model round trip through a SQLite checkpoint")


def scenario_otel() -> None:
    """[otel]: init_tracing installs OTLP exporters when an endpoint is configured and no
    provider is set, and turns sayiir's spans and metrics on; serve_metrics serves them."""
    import urllib.request

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    sayiir = installed_sayiir()
    from sayiir.observability import instrumented, uninstrument
    from sayiir.observability.prometheus import serve_metrics

    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4317"
    os.environ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "1"  # nothing listens: give up quickly at exit
    os.environ["SAYIIR_LOG"] = "warning"
    sayiir.init_tracing()
    try:
        provider = trace.get_tracer_provider()
        check(isinstance(provider, TracerProvider), f"tracer provider is {provider!r}")
        meters = metrics.get_meter_provider()
        check(isinstance(meters, MeterProvider), f"meter provider is {meters!r}")
        check(instrumented(), "init_tracing did not turn instrumentation on")
        flow = sayiir.Flow("otel").then(lambda x: x * 2, name="double").build()
        check(sayiir.run_workflow(flow, 21) == 42, "run with tracing")
    finally:
        sayiir.shutdown_tracing()
    server = serve_metrics(0, sayiir.InMemoryBackend(), addr="127.0.0.1")
    try:
        check(sayiir.run_workflow(flow, 21) == 42, "run with metrics")
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read()
        check(b'sayiir_tasks_completed_total{task_id="double"' in body, "no task metric")
    finally:
        server.close()
        uninstrument()
    say("init_tracing installed OTLP providers and instrumented sayiir; /metrics serves it")


def scenario_ui() -> None:
    """[ui]: `sayiir ui` serves its first page and a static asset from the wheel."""
    import socket
    import urllib.request

    sayiir = installed_sayiir()
    flow = sayiir.Flow("ui-smoke").then(lambda x: x + 1, name="inc").build()
    with sayiir.SqliteBackend(str(HERE / "ui.db")) as backend:
        sayiir.run_durable_workflow(flow, "ui-run-1", 1, backend=backend)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [bin_path("sayiir"), "ui", "--url", f"sqlite://{HERE / 'ui.db'}", "--port", str(port)]
    with subprocess.Popen(
        cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "Uvicorn running on" in line:
                    break
            else:
                raise AssertionError(f"sayiir ui exited with {proc.wait()}: {''.join(seen)}")
            base = f"http://127.0.0.1:{port}"
            with urllib.request.urlopen(f"{base}/runs", timeout=30) as page:
                html = page.read().decode()
            check("ui-run-1" in html and "ui-smoke" in html, "the runs page lists the run")
            with urllib.request.urlopen(f"{base}/runs/ui-run-1", timeout=30) as page:
                check("<svg" in page.read().decode(), "the run page draws its graph")
            with urllib.request.urlopen(f"{base}/static/console.css", timeout=30) as css:
                check(css.status == 200 and b".topbar" in css.read(), "a static asset")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                check(proc.wait(timeout=60) == 0, "sayiir ui stops cleanly on SIGINT")
    say("`sayiir ui` served the runs page, a run's graph and a static asset from the wheel")


SCENARIOS = {
    "core": scenario_core,
    "quickstart": scenario_quickstart,
    "postgres": scenario_postgres,
    "pydantic": scenario_pydantic,
    "otel": scenario_otel,
    "pytest_plugin": scenario_pytest_plugin,
    "ui": scenario_ui,
}

if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # smoke_app (the worker finds it through its cwd)
    for arg in sys.argv[1:]:
        print(f"[wheel-smoke] scenario {arg}", flush=True)
        SCENARIOS[arg]()
