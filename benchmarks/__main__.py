"""``python -m benchmarks run``: every workload, mode and engine, one table.

    python -m benchmarks run               # full suite; writes docs/benchmarks.{md,json}, charts
    python -m benchmarks run --quick       # reduced sizes (CI): results/ only, under 2 minutes
    python -m benchmarks run --headline b  # only the cases behind one headline figure (a, b, c)
    python -m benchmarks run --profile     # also profile our engine per step (cProfile)

Peer engines live in benchmarks/.venvs (made on first use). Timings never fail the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import durability, machine, pg, plan, report, runner
from benchmarks.shapes import WORKLOADS

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DOCS = ROOT.parent / "docs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite and print the table")
    run.add_argument("--quick", action="store_true", help="small sizes; for CI")
    run.add_argument("--headline", choices=sorted(plan.HEADLINES), help="only this figure")
    run.add_argument("--workload", action="append", choices=list(WORKLOADS))
    run.add_argument("--mode", action="append", choices=list(plan.MODES))
    run.add_argument("--engine", action="append", choices=list(plan.ENGINES))
    run.add_argument("--profile", action="store_true", help="profile our engine per step")
    run.add_argument("--details", action="store_true", help="also print every metric")
    run.add_argument("--no-charts", action="store_true")
    docs = run.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None)
    docs.add_argument("--no-docs", dest="docs", action="store_false")
    render = sub.add_parser("render", help="rewrite docs/benchmarks.md from a results file")
    render.add_argument("results", nargs="?", default=str(DOCS / "benchmarks.json"))
    return parser


def _select(args: argparse.Namespace) -> list[plan.Case]:
    cases = plan.headline_plan(args.headline) if args.headline else plan.build_plan(args.quick)
    if args.workload:
        cases = [c for c in cases if c.workload in args.workload]
    if args.mode:
        cases = [c for c in cases if c.mode in args.mode]
    return cases


def _log(message: str) -> None:
    sys.stdout.write(f"[bench] {message}\n")  # one write: threads log too
    sys.stdout.flush()


def _summary(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')} ({result.get('reason', '')})"
    return (
        f"{result['workflows_per_s']:,.1f} wf/s, {result['steps_per_s']:,.0f} steps/s, "
        f"{result['seconds']:.2f} s, {result.get('peak_rss_mib', 0):.0f} MiB"
    )


def _pgbench(cases: list[plan.Case], quick: bool) -> dict[str, Any]:
    if not any(c.mode.startswith(("postgres", "workers")) for c in cases) or pg.unavailable():
        return {}
    seconds = 2 if quick else 10
    out = {}
    for clients in (1, 2, 4):
        out[f"c{clients}"] = pg.pgbench(clients, seconds)
        _log(f"pgbench -N -c {clients}: {out[f'c{clients}'].get('tps', out[f'c{clients}'])} tps")
    return out


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    cases = _select(args)
    engines = [e for e in plan.ENGINES if not args.engine or e in args.engine]
    ctx = runner.prepare(engines, not args.no_charts, _log)
    ctx.case_timeout = 300.0 if args.quick else 1800.0
    ctx.stall = 5.0 if args.quick else 30.0
    ctx.repeats = 1 if args.quick else 3
    setup = time.monotonic() - started
    _log(f"{len(cases)} cases, engines {', '.join(engines)}; setup {setup:.0f} s")
    data: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine.describe(),
        "settings": {
            "worker_poll_interval_s": runner.WORKER_POLL_SECONDS,
            "worker_claim_ttl_s": runner.WORKER_CLAIM_TTL_SECONDS,
        },
        "pgbench": _pgbench(cases, args.quick),
        "postgres_durability": durability.postgres(pg.ADMIN_URL) if not ctx.pg_missing else {},
        "results": [],
    }
    for case in cases:
        for engine in case.engines:
            if engine not in engines:
                continue
            t0 = time.monotonic()
            result = runner.run_one(case, engine, ctx)
            data["results"].append(result)
            _log(f"{case.label} {engine}: {_summary(result)} [{time.monotonic() - t0:.1f} s]")
    if args.profile:
        from benchmarks import profiling

        data["profile"] = profiling.run_all(args.quick, _log)
    data["duration_s"] = round(time.monotonic() - started, 1)
    _finish(args, data)
    return 0


def _finish(args: argparse.Namespace, data: dict[str, Any]) -> None:
    results = data["results"]
    print()
    print(report.text_table(*report.main_rows(results)))
    if args.details:
        print()
        print(report.text_table(*report.detail_rows(results)))
    print()
    for line in report.pgbench_lines(data["pgbench"]) + report.headlines(results, data["pgbench"]):
        print(line)
    for line in report.target_lines(results, data["pgbench"]):
        print(line)
    print()
    for line in report.durability_lines(data):
        print(line)
    notes = report.reasons(results)
    if notes:
        print("\nnot measured:")
        for line in notes:
            print(f"  {line}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    _log(f"results: {path.relative_to(ROOT.parent)}; total {data['duration_s']} s")
    full = not (args.quick or args.headline or args.workload or args.mode or args.engine)
    write_docs = full if args.docs is None else args.docs
    if write_docs and not full:
        data = _merge(DOCS / "benchmarks.json", data)
    img = DOCS / "img" if write_docs else RESULTS / f"{stamp}-img"
    charts: list[str] = []
    if not args.no_charts:
        from benchmarks import charts as charts_mod

        charts = charts_mod.render(data, img, _log)
    if write_docs:
        from benchmarks import docs

        (DOCS / "benchmarks.json").write_text(json.dumps(data, indent=1) + "\n")
        docs.write(data, DOCS / "benchmarks.md", charts)
        _log("wrote docs/benchmarks.md, docs/benchmarks.json and docs/img/")


def _merge(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A partial run (--docs with filters) replaces its cases in the committed results."""
    if not path.exists():
        return data
    old: dict[str, Any] = json.loads(path.read_text())

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["workload"], r["mode"], r["size"], r["engine"])

    fresh = {key(r): r for r in data["results"]}
    merged = [fresh.pop(key(r), r) for r in old["results"]] + list(fresh.values())
    old["results"] = merged
    old["pgbench"] = data["pgbench"] or old.get("pgbench", {})
    old["postgres_durability"] = data.get("postgres_durability") or old.get("postgres_durability")
    old["profile"] = data.get("profile") or old.get("profile")
    old.setdefault("updates", []).append(
        {
            "started": data["started"],
            "cases": len(data["results"]),
            "commit": data["machine"]["commit"],
        }
    )
    return old


def render(args: argparse.Namespace) -> int:
    from benchmarks import charts as charts_mod
    from benchmarks import docs

    data = json.loads(Path(args.results).read_text())
    charts = charts_mod.render(data, DOCS / "img", _log)
    docs.write(data, DOCS / "benchmarks.md", charts)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "render":
        return render(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
