"""Server time of the web console's pages on PostgreSQL with 1,000,000 runs (issue 14).

    python -m benchmarks.console_pages [--url ADMIN_URL] [--runs 1000000] [--repeat 30]

Seeds a scratch database the way ``benchmarks/console_scale.py`` does (its ``seed``: 1,000,000
runs of 20 workflows, 2 % failed, and one run of 10,000 steps), adds the workflows' stored
definitions (so run pages draw their graph), then requests each page in-process through the
ASGI interface (no socket, no browser): the figure is the server's time, queries plus template
rendering plus SVG drawing, p50 and p95 over ``--repeat`` requests after one warm-up. Pages: the
runs list (first page; with a status + workflow filter, first page and page 50 reached by keyset
cursors), the detail of the 10,000-step run (its first page of steps, graph and timeline), the
stats page; and the live feed's idle cost, backend queries per second while a page is
subscribed and nothing changes. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import sayiir.ui
from benchmarks.console_scale import BIG_RUN, seed
from benchmarks.pg import ADMIN_URL, fresh_database
from sayiir.backends.postgres import PostgresBackend

NEXT = re.compile(r'id="next-page" href="[^"?]*\?([^"]+)"')


async def _get(app: Any, target: str) -> tuple[int, str]:
    parts = urlsplit(target)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode(),
        "root_path": "",
        "query_string": parts.query.encode(),
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body).decode()


async def _time(app: Any, target: str, repeat: int) -> dict[str, float]:
    status, _ = await _get(app, target)  # warm-up (and a check)
    if status != 200:
        raise SystemExit(f"{target}: HTTP {status}")
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await _get(app, target)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p95_ms": samples[max(0, round(0.95 * len(samples)) - 1)],
    }


async def _page(app: Any, first: str, n: int) -> str:
    """The URL of page ``n`` of a list, reached by following its keyset cursors."""
    target = first
    for _ in range(n - 1):
        _, text = await _get(app, target)
        match = NEXT.search(text)
        if match is None:
            raise SystemExit(f"{first}: fewer than {n} pages")
        target = "/runs?" + html.unescape(match.group(1))
    return target


async def _idle_queries(app: Any, seconds: float) -> float:
    """Backend queries per second made by the live feed while nothing changes."""
    feed = app.state.console.feed
    async with feed.subscription():
        await asyncio.sleep(0.5)
        before = feed.polls
        await asyncio.sleep(seconds)
        return (feed.polls - before) / seconds


def _definition(workflow_id: str, definition_hash: str) -> dict[str, Any]:
    def task(name: str) -> dict[str, Any]:
        return {"kind": "task", "id": name, "key": name, "timeout": None, "retries": 2}

    steps = [task("validate"), {"kind": "fork", "id": "fan", "join": task("merge"),
             "branches": [{"kind": "sequence", "steps": [task("charge")]},
                          {"kind": "sequence", "steps": [task("reserve")]}]},
             {"kind": "signal", "id": "ok", "key": "ok", "signal": "ok", "timeout": None},
             task("ship")]  # fmt: skip
    root = {"kind": "sequence", "steps": steps}
    return {"workflow_id": workflow_id, "definition_hash": definition_hash, "root": root}


def _store_definitions(url: str) -> None:
    import json

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        docs = [_definition(f"wf-{i}", f"hash-{i}") for i in range(20)]
        docs.append(_definition("wf-big", "hash-big"))
        for doc in docs:
            conn.execute(
                "INSERT INTO sayiir_workflow_definitions (definition_hash, workflow_id, structure)"
                " VALUES (%s, %s, %s)",
                (doc["definition_hash"], doc["workflow_id"], json.dumps(doc)),
            )


async def _measure(backend: Any, args: argparse.Namespace) -> None:
    app = sayiir.ui.app(backend, token=None)
    filtered = "/runs?status=failed&workflow=wf-0"
    pages = {
        "runs, first page": "/runs",
        "runs, status+workflow filter, first page": filtered,
        "runs, status+workflow filter, page 50": await _page(app, filtered, 50),
        f"run detail of {BIG_RUN} (10,000 steps)": f"/runs/{BIG_RUN}",
        "stats (24 h)": "/stats",
    }
    print(f"{'page (server time)':<48} {'p50 ms':>8} {'p95 ms':>8}")
    for name, target in pages.items():
        figures = await _time(app, target, args.repeat)
        print(f"{name:<48} {figures['p50_ms']:>8.1f} {figures['p95_ms']:>8.1f}")
    rate = await _idle_queries(app, args.idle_secs)
    print(f"{'live feed while idle (queries/s)':<48} {rate:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_pages", description=__doc__)
    parser.add_argument("--url", default=ADMIN_URL, help="PostgreSQL server (admin URL)")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--idle-secs", type=float, default=10.0)
    args = parser.parse_args()
    with fresh_database("console_pages", args.url) as url:
        with PostgresBackend(url) as backend:
            backend.get_instance("migrate")  # create the tables (migrations incl. 0006)
        took = seed(url, args.runs)
        _store_definitions(url)
        print(f"seeded {args.runs:,} runs + one of 10,000 steps in {took:.1f}s")
        with PostgresBackend(url) as backend:
            asyncio.run(_measure(backend, args))


if __name__ == "__main__":
    main()
