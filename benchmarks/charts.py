"""One PNG per workload: throughput by mode and engine, and per-step cost against K.

matplotlib is a dev-only dependency: when it does not import, it is installed into the
running venv on first use (``pip install matplotlib``); when that fails, charts are skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.plan import ENGINE_LABELS, ENGINES, MODES

COLORS = {"ours": "#1b7837", "ref": "#2166ac", "dbos": "#b2182b"}
MARKERS = {"plain": "o", "durable-memory": "s", "sqlite": "^", "postgres": "D"}
MARKERS.update({"workers-1": "v", "workers-2": "<", "workers-4": ">", "workers-2-open": "x"})
MARKERS.update({"postgres-many": "P"})
MARKERS.update({"sqlite-workers-1": "1", "sqlite-workers-2": "2", "sqlite-workers-4": "3"})


def matplotlib_ready(log: Callable[[str], None]) -> bool:
    """Import matplotlib, installing it into this venv first when it is missing."""
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    log("installing matplotlib into this venv (dev-only, for the charts)")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    importlib.invalidate_caches()
    return proc.returncode == 0


def _matplotlib(log: Callable[[str], None]) -> Any:
    if not matplotlib_ready(log):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(data: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    return [r for r in data["results"] if r["workload"] == workload and r.get("status") == "ok"]


def _bar_size(rows: list[dict[str, Any]]) -> int | None:
    counts: dict[int, int] = {}
    for r in rows:
        counts[r["size"]] = counts.get(r["size"], 0) + 1
    return max(counts, key=lambda k: (counts[k], k == 10)) if counts else None


def _bars(ax: Any, rows: list[dict[str, Any]], size: int) -> None:
    modes = [m for m in MODES if any(r["mode"] == m and r["size"] == size for r in rows)]
    width = 0.8 / len(ENGINES)
    for n, engine in enumerate(ENGINES):
        xs, ys = [], []
        for i, mode in enumerate(modes):
            hit = [r for r in rows if (r["mode"], r["size"], r["engine"]) == (mode, size, engine)]
            if hit:
                xs.append(i + (n - 1) * width)
                ys.append(hit[0]["steps_per_s"])
        if xs:
            ax.bar(xs, ys, width, label=ENGINE_LABELS[engine], color=COLORS[engine])
    ax.set_xticks(range(len(modes)), modes, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("steps/s (log)")
    ax.set_title(f"throughput at K={size}")
    ax.legend(fontsize=7)


def _lines(ax: Any, rows: list[dict[str, Any]]) -> None:
    for engine in ENGINES:
        for mode in MODES:
            pts = sorted(
                (r["size"], r["us_per_step"])
                for r in rows
                if r["engine"] == engine and r["mode"] == mode
            )
            if len(pts) < 2:
                continue
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=MARKERS[mode],
                color=COLORS[engine],
                label=f"{engine} {mode}",
                linewidth=1,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("steps per run K (log)")
    ax.set_ylabel("µs per step (log)")
    ax.set_title("cost per step as runs grow")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def render(data: dict[str, Any], out_dir: Path, log: Callable[[str], None]) -> list[str]:
    """Write ``<workload>.png`` files into ``out_dir``; return their paths."""
    plt = _matplotlib(log)
    if plt is None:
        log("charts skipped: matplotlib unavailable")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for workload in ("linear", "fanout", "signal", "sleep"):
        rows = _ok(data, workload)
        size = _bar_size(rows)
        if size is None:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
        _bars(left, rows, size)
        _lines(right, rows)
        fig.suptitle(f"{workload} workload")
        fig.tight_layout()
        path = out_dir / f"bench-{workload}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(str(path))
    log(f"charts: {', '.join(Path(p).name for p in written)} in {out_dir}")
    return written
