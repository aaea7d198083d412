"""Server-drawn SVG charts: a run's timeline of attempts, and runs per status over time.

No charting library and no JavaScript: the pages stay a few kilobytes and render the same
in a screenshot, a browser with scripts off, or a test.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> "<svg" in status_chart([(t, "completed", 3), (t, "failed", 1)], 3600, t, t)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from sayiir.core.queries import StepView

__all__ = ["STATUS_ORDER", "fmt_secs", "gantt", "status_chart"]

STATUS_ORDER = (
    "completed",
    "in_progress",
    "waiting",
    "awaiting_signal",
    "paused",
    "failed",
    "cancelled",
)
ROW_H = 18.0
LABEL_W = 170.0
CHART_W = 640.0


def fmt_secs(secs: float) -> str:
    """A duration for people: ``0.4 ms``, ``12 ms``, ``3.5 s``, ``2.0 min``, ``1.5 h``."""
    if secs < 0.01:
        return f"{secs * 1000:.1f} ms"
    if secs < 1:
        return f"{secs * 1000:.0f} ms"
    if secs < 120:
        return f"{secs:.1f} s"
    if secs < 7200:
        return f"{secs / 60:.1f} min"
    return f"{secs / 3600:.1f} h"


def gantt(steps: Sequence[StepView], now: datetime | None = None) -> str:
    """One row per step, one bar per attempt (class ``att-<outcome>``); ``""`` if no times."""
    spans = [
        (a.started_at, a.ended_at or now or datetime.now(UTC), a.outcome, a.attempt, s.key)
        for s in steps
        for a in s.attempts
        if a.started_at is not None
    ]
    if not spans:
        return ""
    t0 = min(start for start, *_ in spans)
    t1 = max(end for _, end, *_ in spans)
    total = max((t1 - t0).total_seconds(), 1e-3)
    scale = CHART_W / total
    rows = {s.key: i for i, s in enumerate(steps)}
    height = ROW_H * len(steps) + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" '
        f'width="{LABEL_W + CHART_W + 40:.0f}" '
        f'height="{height:.0f}" role="img" aria-label="timeline of attempts">'
    ]
    for tick in range(5):
        x = LABEL_W + CHART_W * tick / 4
        out.append(
            f'<line class="tick" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20:.1f}"/>'
            f'<text class="tick-label" x="{x:.1f}" y="{height - 6:.1f}" text-anchor="middle">'
            f"+{escape(fmt_secs(total * tick / 4))}</text>"
        )
    for step in steps:
        y = rows[step.key] * ROW_H
        out.append(
            f'<text class="row-label" x="{LABEL_W - 8:.1f}" y="{y + 13:.1f}" text-anchor="end">'
            f"{escape(step.key if len(step.key) <= 24 else step.key[:23] + '…')}</text>"
        )
    for start, end, outcome, attempt, key in spans:
        x = LABEL_W + (start - t0).total_seconds() * scale
        w = max((end - start).total_seconds() * scale, 2.0)
        y = rows[key] * ROW_H + 3
        dur = fmt_secs((end - start).total_seconds())
        out.append(
            f'<rect class="bar att-{escape(outcome)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
            f'height="{ROW_H - 6:.0f}" rx="3"><title>{escape(key)} attempt {attempt}: '
            f"{escape(outcome)}, {escape(dur)}</title></rect>"
        )
    out.append("</svg>")
    return "".join(out)


def status_chart(
    buckets: Sequence[tuple[datetime, str, int]],
    bucket_secs: float,
    since: datetime,
    until: datetime,
    width: float = 760.0,
) -> str:
    """Stacked bars: runs created per time bucket of ``[since, until)``, split by their
    status now; empty buckets are drawn too, so the time axis is the whole window."""
    if not buckets:
        return ""
    step = timedelta(seconds=bucket_secs)
    first = min(b for b, _, _ in buckets)  # bucket starts are aligned by the backend
    while first - step >= since:
        first -= step
    slots: list[datetime] = []
    slot = first
    while slot < until or not slots:
        slots.append(slot)
        slot += step
    counts: dict[datetime, dict[str, int]] = {s: {} for s in slots}
    for start, status, count in buckets:
        counts.setdefault(start, {})[status] = counts.get(start, {}).get(status, 0) + count
    peak = max(sum(c.values()) for c in counts.values()) or 1
    height, left, bottom = 220.0, 44.0, 28.0
    plot_h = height - bottom - 10
    bar_w = (width - left - 10) / max(len(slots), 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="status-chart" width="{width:.0f}" '
        f'height="{height:.0f}" role="img" aria-label="runs per status over time">'
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = 10 + plot_h - plot_h * tick / 4
        out.append(
            f'<line class="tick" x1="{left:.0f}" y1="{y:.1f}" x2="{width - 10:.0f}" y2="{y:.1f}"/>'
            f'<text class="tick-label" x="{left - 6:.0f}" y="{y + 4:.1f}" text-anchor="end">'
            f"{value:.0f}</text>"
        )
    label_every = max(1, len(slots) // 8)
    for i, slot in enumerate(slots):
        x = left + i * bar_w
        y = 10 + plot_h
        for status in STATUS_ORDER:
            count = counts[slot].get(status, 0)
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            out.append(
                f'<rect class="seg st-{status}" x="{x + 1:.1f}" y="{y:.1f}" '
                f'width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}"><title>'
                f"{slot:%Y-%m-%d %H:%M} {status}: {count}</title></rect>"
            )
        if i % label_every == 0:
            fmt = "%H:%M" if bucket_secs < 86400 else "%m-%d"
            out.append(
                f'<text class="tick-label" x="{x + bar_w / 2:.1f}" y="{height - 10:.0f}" '
                f'text-anchor="middle">{slot.strftime(fmt)}</text>'
            )
    out.append("</svg>")
    return "".join(out)
