"""Tables (plain text for the terminal, Markdown for docs) and the headline figures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from benchmarks.plan import ENGINE_LABELS, ENGINES, HEADLINE_SIZE, HEADLINES, MODE_ENGINES

Row = list[str]


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cell(result: dict[str, Any] | None, key: str = "workflows_per_s") -> str:
    if result is None:
        return "-"
    if result.get("status") != "ok":
        return str(result.get("status", "?"))
    value = result.get(key)
    return _num(value, 0 if value is None or value >= 100 else 1)


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> str:
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok":
        return "-"
    if not b.get(key):
        return "-"
    return f"{a[key] / b[key]:.2f}x"


def index(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    return {(r["workload"], r["mode"], r["size"], r["engine"]): r for r in results}


def case_keys(results: Iterable[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    seen: dict[tuple[str, str, int, int], None] = {}
    for r in results:
        seen.setdefault((r["workload"], r["mode"], r["size"], r["runs"]), None)
    return list(seen)


def main_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    """Rows workload/mode/size; columns: workflows/s per engine and the ratios."""
    idx = index(results)
    header = ["workload", "mode", "K", "runs"]
    header += [f"{ENGINE_LABELS[e]} wf/s" for e in ENGINES] + ["ours/ref", "ours/DBOS"]
    rows = []
    for workload, mode, size, runs in case_keys(results):
        by = {e: idx.get((workload, mode, size, e)) for e in ENGINES}
        row = [workload, mode, str(size), f"{runs:,}"]
        row += [_cell(by[e]) if e in MODE_ENGINES[mode] else "" for e in ENGINES]
        row += [
            _ratio(by["ours"], by["ref"], "workflows_per_s"),
            _ratio(by["ours"], by["dbos"], "workflows_per_s"),
        ]
        rows.append(row)
    return header, rows


DETAIL_HEADER = [
    "workload",
    "mode",
    "K",
    "runs",
    "engine",
    "wf/s",
    "steps/s",
    "µs/step",
    "pickup p50/p99 ms",
    "e2e p50/p99 ms",
    "makespan s",
    "peak RSS MiB",
    "note",
]


def _pair(r: dict[str, Any], a: str, b: str) -> str:
    if r.get(a) is None:
        return "-"
    return f"{_num(r[a], 2)} / {_num(r[b], 2)}"


def detail_rows(results: list[dict[str, Any]]) -> tuple[Row, list[Row]]:
    rows = []
    for r in results:
        head = [r["workload"], r["mode"], str(r["size"]), f"{r['runs']:,}", r["engine"]]
        if r.get("status") != "ok":
            rows.append([*head, str(r.get("status"))] + [""] * 6 + [str(r.get("reason", ""))])
            continue
        rows.append(
            [
                *head,
                _cell(r),
                _cell(r, "steps_per_s"),
                _num(r.get("us_per_step"), 1),
                _pair(r, "pickup_p50_ms", "pickup_p99_ms"),
                _pair(r, "e2e_p50_ms", "e2e_p99_ms"),
                _num(r.get("seconds"), 3),
                _num(r.get("peak_rss_mib"), 0),
                "",
            ]
        )
    return DETAIL_HEADER, rows


def text_table(header: Row, rows: list[Row]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def fmt(r: Row) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def markdown_table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def reasons(results: list[dict[str, Any]]) -> list[str]:
    """One line per distinct reason a cell is n/a or an error."""
    seen: dict[str, list[str]] = {}
    for r in results:
        if r.get("status") != "ok":
            key = f"{r['engine']}: {r.get('status')} ({r.get('reason', '?')})"
            seen.setdefault(key, []).append(f"{r['workload']}/{r['mode']}")
    return [f"{k}: {', '.join(sorted(set(v)))}" for k, v in seen.items()]


# -- headline figures ----------------------------------------------------------------------


def _get(results: list[dict[str, Any]], mode: str, engine: str) -> dict[str, Any] | None:
    r = index(results).get(("linear", mode, HEADLINE_SIZE, engine))
    return r if r and r.get("status") == "ok" else None


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"{value:.2f}x (target >= {target}x: {'met' if value >= target else 'NOT met'})"


def _x(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if a is None or b is None or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def headlines(results: list[dict[str, Any]], pgbench: dict[str, Any]) -> list[str]:
    """The three headline figures; a figure without any measured case is left out."""
    lines = _headlines(results, pgbench)
    modes = {r["mode"] for r in results if r["workload"] == "linear" and r["size"] == 4}
    keep = {k for k, ms in HEADLINES.items() if modes & set(ms)}
    out: list[str] = []
    for block in lines:
        if block[0][1] in keep:
            out += block
    return out


def _headlines(results: list[dict[str, Any]], pgbench: dict[str, Any]) -> list[list[str]]:
    out = ["(a) 4-step linear, workflows/s, ours vs reference (target: >= 1x):"]
    for mode in ("plain", "durable-memory", "sqlite"):
        ours, ref = _get(results, mode, "ours"), _get(results, mode, "ref")
        line = f"    {mode:15} ours {_cell(ours):>9}  ref {_cell(ref):>9}  "
        if ref is None and mode == "sqlite":
            dbos = _get(results, mode, "dbos")
            ratio = _x(ours, dbos, "workflows_per_s")
            shown = "-" if ratio is None else f"{ratio:.2f}x"
            line += f"(no SQLite backend in the ref; DBOS {_cell(dbos)}, ours/DBOS {shown})"
        else:
            line += _verdict(_x(ours, ref, "workflows_per_s"), 1)
        out.append(line)
    blocks = [out]
    out = []
    ours, ref, dbos = (_get(results, "postgres", e) for e in ("ours", "ref", "dbos"))
    c1 = pgbench.get("c1", {})
    tps = c1.get("tps") if c1.get("status") == "ok" else None
    out.append("(b) PostgreSQL, one process, serial 4-step linear, workflows/s:")
    out.append(f"    ours {_cell(ours)}  ref {_cell(ref)}  DBOS {_cell(dbos)}")
    out.append(f"    ours/ref  {_verdict(_x(ours, ref, 'workflows_per_s'), 5)}")
    out.append(f"    ours/DBOS {_verdict(_x(ours, dbos, 'workflows_per_s'), 2.5)}")
    steps = ours["steps_per_s"] if ours else None
    ratio = steps / tps if steps and tps else None
    out.append(
        f"    ours steps/s {_num(steps)} vs pgbench -N -c 1 {_num(tps)} tps: {_verdict(ratio, 0.6)}"
    )
    blocks.append(out)
    out = []
    out.append("(c) 2 worker processes drain 4-step linear runs (PostgreSQL):")
    for engine in ("ours", "ref"):
        r = _get(results, "workers-2-open", engine)
        if r is not None:
            out.append(
                f"    {engine:4} open loop, {r.get('rate', '?')} runs/s: first-task pickup "
                f"p50/p99 ms {_pair(r, 'pickup_first_p50_ms', 'pickup_first_p99_ms')}"
            )
    for engine in ("ours", "ref"):
        r = _get(results, "workers-2", engine)
        if r is None:
            out.append(f"    {engine:4} not measured")
            continue
        out.append(
            f"    {engine:4} {r['runs']:,} runs: steps/s {_num(r['steps_per_s'])}, "
            f"makespan {r['seconds']:.2f} s, pickup p50/p99 ms: all "
            f"{_pair(r, 'pickup_p50_ms', 'pickup_p99_ms')}, first tasks "
            f"{_pair(r, 'pickup_first_p50_ms', 'pickup_first_p99_ms')}, next tasks "
            f"{_pair(r, 'pickup_next_p50_ms', 'pickup_next_p99_ms')}"
        )
    blocks.append(out)
    return blocks


def pgbench_lines(pgbench: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("c1", "c2", "c4"):
        r = pgbench.get(key)
        if not r:
            continue
        if r.get("status") == "ok":
            lines.append(
                f"pgbench -N -c {r['clients']} ({r['seconds']} s): {r['tps']:,.0f} tps, "
                f"latency {r['latency_ms']} ms"
            )
        else:
            lines.append(f"pgbench -N {key}: {r.get('status')} ({r.get('reason')})")
    return lines


def durability_lines(data: dict[str, Any]) -> list[str]:
    """What every engine's commits survive in this run (``benchmarks/durability.py``)."""
    lines = ["Durability (what a commit survives; same for every engine unless listed):"]
    server = data.get("postgres_durability")
    if server:
        settings = ", ".join(f"{k}={v}" for k, v in server.items())
        lines.append(f"    PostgreSQL server: {settings} (no engine overrides it per session)")
    seen: dict[str, str] = {}
    for r in data["results"]:
        if r.get("mode") == "sqlite" and r.get("durability"):
            settings = ", ".join(f"{k}={v}" for k, v in r["durability"].items())
            seen.setdefault(r["engine"], settings)
    for engine, settings in seen.items():
        lines.append(f"    SQLite, {engine}: {settings}")
    return lines if len(lines) > 1 else []


def _steps(results: list[dict[str, Any]], workload: str, mode: str, size: int) -> float | None:
    r = index(results).get((workload, mode, size, "ours"))
    return float(r["steps_per_s"]) if r and r.get("status") == "ok" else None


def _pgbench_tps(pgbench: dict[str, Any], clients: int) -> float | None:
    r = pgbench.get(f"c{clients}", {})
    return float(r["tps"]) if r.get("status") == "ok" else None


def target_lines(results: list[dict[str, Any]], pgbench: dict[str, Any]) -> list[str]:
    """The throughput targets of issue 16 as ratios of this run (left out when unmeasured)."""
    targets = [
        ("forks on 2 workers: fanout K=10 vs linear K=10 steps/s",
         _steps(results, "fanout", "workers-2", 10), _steps(results, "linear", "workers-2", 10),
         0.6),
        ("PostgreSQL serial K=4 steps/s vs pgbench -N -c 1 tps",
         _steps(results, "linear", "postgres", 4), _pgbench_tps(pgbench, 1), 0.6),
        ("many runs in one process (postgres-many) K=4 steps/s vs pgbench -N -c 4 tps",
         _steps(results, "linear", "postgres-many", 4), _pgbench_tps(pgbench, 4), 0.6),
        ("2 workers on PostgreSQL K=4 steps/s vs pgbench -N -c 2 tps",
         _steps(results, "linear", "workers-2", 4), _pgbench_tps(pgbench, 2), 0.5),
        ("2 workers on SQLite K=4 vs serial in-process SQLite K=4, steps/s",
         _steps(results, "linear", "sqlite-workers-2", 4), _steps(results, "linear", "sqlite", 4),
         0.7),
    ]  # fmt: skip
    lines = []
    for label, ours, base, target in targets:
        if ours is None or not base:
            continue
        lines.append(f"    {label}: {_num(ours)} / {_num(base)} = {_verdict(ours / base, target)}")
    serial = index(results).get(("linear", "postgres", 4, "ours"))
    if serial and serial.get("status") == "ok" and serial.get("client_cpu_us_per_step"):
        cpu, wall = serial["client_cpu_us_per_step"], serial["us_per_step"]
        lines.append(
            f"    PostgreSQL serial K=4, µs per step: {wall:,.0f} wall = {cpu:,.0f} client CPU "
            f"+ {wall - cpu:,.0f} waiting for the server (round trips, commit)"
        )
    return ["Issue 16 targets (ratios within this run):", *lines] if lines else []
