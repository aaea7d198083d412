"""The graph of a Flow as an SVG, drawn on the server from its stored definition JSON.

The definition (``sayiir.core.graph.definition_json``) is a tree: sequences, forks with a
join, routes, loops, child workflows, delays and signal waits. Such a graph is
series-parallel, so a recursive block layout draws it without a general graph-layout
library: every block is centred on one vertical axis, enters at its top centre and leaves at
its bottom centre; a sequence stacks blocks, a fork or route puts them side by side.

Each node with a checkpoint key is coloured by the run's step of that key (CSS class
``st-<status>``); inside a loop the latest iteration's step counts (keys ``<loop>@<i>/<key>``).
Every text is escaped: ids and signal names are user data.

>>> svg = render_svg({"root": {"kind": "task", "id": "a", "key": "a"}}, {"a": "completed"})
>>> 'data-key="a"' in svg and "st-completed" in svg
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

__all__ = ["render_svg"]

NODE_W = 188.0
NODE_H = 44.0
PILL_W = 92.0
PILL_H = 24.0
GAP_Y = 26.0
GAP_X = 22.0
FRAME_PAD = 14.0
FRAME_HEAD = 22.0
MARGIN = 16.0
LABEL_CHARS = 24

Draw = Callable[[float, float], list[str]]  # top-left corner -> SVG elements


@dataclass(frozen=True)
class _Block:
    w: float
    h: float
    draw: Draw


def _short(text: str, n: int = LABEL_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _edge(x1: float, y1: float, x2: float, y2: float, cls: str = "edge") -> str:
    """An orthogonal arrow from (x1, y1) down to (x2, y2)."""
    if abs(x1 - x2) < 0.5:
        d = f"M{x1:.1f},{y1:.1f} V{y2:.1f}"
    else:
        mid = y1 + min(GAP_Y / 2, (y2 - y1) / 2)
        d = f"M{x1:.1f},{y1:.1f} V{mid:.1f} H{x2:.1f} V{y2:.1f}"
    return f'<path class="{cls}" d="{d}" marker-end="url(#arrow)"/>'


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<path class="edge" d="M{x1:.1f},{y1:.1f} V{y2:.1f} H{x2:.1f}"/>'


class _Layout:
    """Lays out one definition; ``status`` maps a checkpoint key to its step's status."""

    def __init__(self, steps: Mapping[str, str], waiting_signal: str | None = None) -> None:
        self._steps = steps
        self._waiting_signal = waiting_signal
        self._loop_keys: dict[str, list[tuple[int, str]]] = {}
        pattern = re.compile(r"^(.*)@(\d+)/(.*)$")
        for key, status in steps.items():
            match = pattern.match(key)
            while match:  # nested loops: a/b@1/c@2/d counts for d, c@2/d
                self._loop_keys.setdefault(match.group(3), []).append((int(match.group(2)), status))
                match = pattern.match(match.group(3))

    def status(self, key: str | None) -> str:
        if not key:
            return "none"
        if key in self._steps:
            return self._steps[key]
        iterations = self._loop_keys.get(key)
        if iterations:
            return max(iterations)[1]
        return "pending"

    # ------------------------------------------------------------------ blocks

    def block(self, node: Mapping[str, Any]) -> _Block:
        kind = node.get("kind")
        if kind == "sequence":
            return self.sequence([n for n in node.get("steps", [])])
        if kind == "fork":
            return self.fork(node)
        if kind == "route":
            return self.route(node)
        if kind in ("loop", "child"):
            loop = kind == "loop"
            title = (
                f"loop {node.get('id', '')} · up to {node.get('max_iterations', '?')} times"
                if loop
                else f"child workflow {node.get('workflow_id', '')}"
            )
            inner = node.get("body" if loop else "root") or {"kind": "sequence", "steps": []}
            return self.frame(node, title, self.block(inner), kind)
        return self.leaf(node)

    def leaf(self, node: Mapping[str, Any]) -> _Block:
        kind = str(node.get("kind", "task"))
        ident = str(node.get("id", ""))
        key = node.get("key") or ident
        caption = {"delay": "delay", "signal": "wait for signal"}.get(kind, "task")
        label = ident
        if kind == "delay":
            label = f"{ident} · {_seconds(node.get('seconds'))}"
        elif kind == "signal":
            label = str(node.get("signal") or ident)
            if node.get("timeout") is not None:
                caption += f" · ≤{_seconds(node.get('timeout'))}"
        elif kind == "task":
            retries = node.get("retries") or 0
            if retries:
                caption += f" · {retries} retr{'y' if retries == 1 else 'ies'}"
            if node.get("timeout") is not None:
                caption += f" · ≤{_seconds(node.get('timeout'))}"
        status = self.status(str(key))
        if kind == "signal" and status == "pending" and node.get("signal") == self._waiting_signal:
            status = "waiting"  # the run is parked here, waiting for this signal
        title = f"{kind} {ident} (key {key}): {status}"

        def draw(x: float, y: float) -> list[str]:
            return [
                f'<g class="node kind-{escape(kind)} st-{escape(status)}" '
                f'data-key="{escape(str(key))}" data-status="{escape(status)}">'
                f"<title>{escape(title)}</title>"
                f'<a href="#step-{escape(str(key))}">'
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="8"/>'
                f'<text class="caption" x="{x + 12:.1f}" y="{y + 16:.1f}">{escape(caption)}</text>'
                f'<text class="label" x="{x + 12:.1f}" y="{y + 34:.1f}">'
                f"{escape(_short(label))}</text></a></g>"
            ]

        return _Block(NODE_W, NODE_H, draw)

    def pill(self, text: str, cls: str, key: str | None = None, title: str = "") -> _Block:
        status = self.status(key) if key else "none"
        keyattr = f' data-key="{escape(key)}" data-status="{escape(status)}"' if key else ""

        def draw(x: float, y: float) -> list[str]:
            return [
                f'<g class="pill {cls} st-{escape(status)}"{keyattr}>'
                f"<title>{escape(title or text)}</title>"
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{PILL_W}" height="{PILL_H}" '
                f'rx="{PILL_H / 2}"/><text x="{x + PILL_W / 2:.1f}" y="{y + 16:.1f}" '
                f'text-anchor="middle">{escape(_short(text, 13))}</text></g>'
            ]

        return _Block(PILL_W, PILL_H, draw)

    def sequence(self, nodes: list[Mapping[str, Any]]) -> _Block:
        blocks = [self.block(n) for n in nodes]
        if not blocks:
            return _Block(PILL_W, 0.0, lambda x, y: [])
        w = max(b.w for b in blocks)
        h = sum(b.h for b in blocks) + GAP_Y * (len(blocks) - 1)

        def draw(x: float, y: float) -> list[str]:
            out: list[str] = []
            cx = x + w / 2
            top = y
            for i, b in enumerate(blocks):
                if i:
                    out.append(_edge(cx, top - GAP_Y, cx, top))
                out += b.draw(cx - b.w / 2, top)
                top += b.h + GAP_Y
            return out

        return _Block(w, h, draw)

    def _fan(self, head: _Block, arms: list[tuple[str, _Block]], tail: _Block) -> _Block:
        """``head``, then ``arms`` side by side (edge labels), then ``tail``."""
        if not arms:
            arms = [("", _Block(PILL_W, 0.0, lambda x, y: []))]
        arms_w = sum(b.w for _, b in arms) + GAP_X * (len(arms) - 1)
        arms_h = max(b.h for _, b in arms)
        label_gap = 14.0 if any(label for label, _ in arms) else 0.0
        w = max(head.w, tail.w, arms_w)
        h = head.h + GAP_Y + label_gap + arms_h + GAP_Y + tail.h

        def draw(x: float, y: float) -> list[str]:
            cx = x + w / 2
            out = head.draw(cx - head.w / 2, y)
            arms_top = y + head.h + GAP_Y + label_gap
            tail_top = arms_top + arms_h + GAP_Y
            left = cx - arms_w / 2
            for label, b in arms:
                bx = left + b.w / 2
                out.append(_edge(cx, y + head.h, bx, arms_top))
                if label:
                    out.append(
                        f'<text class="edge-label" x="{bx + 4:.1f}" y="{arms_top - 4:.1f}">'
                        f"{escape(_short(label, 18))}</text>"
                    )
                out += b.draw(left, arms_top)
                out.append(_line(bx, arms_top + b.h, bx, tail_top - GAP_Y / 2))
                out.append(_edge(bx, tail_top - GAP_Y / 2, cx, tail_top))
                left += b.w + GAP_X
            out += tail.draw(cx - tail.w / 2, tail_top)
            return out

        return _Block(w, h, draw)

    def fork(self, node: Mapping[str, Any]) -> _Block:
        arms = [("", self.block(b)) for b in node.get("branches", [])]
        join = node.get("join")
        tail = self.leaf(join) if join else self.pill("join", "join")
        return self._fan(self.pill("fork", "fork", title=f"fork {node.get('id', '')}"), arms, tail)

    def route(self, node: Mapping[str, Any]) -> _Block:
        branches = node.get("branches") or {}
        arms = [(str(value), self.block(b)) for value, b in branches.items()]
        if node.get("default"):
            arms.append(("default", self.block(node["default"])))
        key = node.get("key")
        head = self.pill(
            "route", "route", str(key) if key else None, title=f"route {node.get('id', '')}"
        )
        return self._fan(head, arms, self.pill("merge", "merge"))

    def frame(self, node: Mapping[str, Any], title: str, body: _Block, cls: str) -> _Block:
        key = node.get("key")
        status = self.status(str(key)) if key else "none"
        back = 22.0 if cls == "loop" else 0.0
        title_w = len(title) * 6.2 + 10
        # wide enough that the entry edge (at the centre) clears the title (at the left)
        w = max(body.w + 2 * FRAME_PAD + 2 * back, 2 * title_w + 24)
        h = FRAME_HEAD + body.h + 2 * FRAME_PAD

        def draw(x: float, y: float) -> list[str]:
            keyattr = f' data-key="{escape(str(key))}"' if key else ""
            out = [
                f'<g class="frame {cls} st-{escape(status)}"{keyattr} '
                f'data-status="{escape(status)}"><title>{escape(title)}: {escape(status)}'
                f'</title><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                f'rx="10"/><text class="frame-title" x="{x + 10:.1f}" y="{y + 16:.1f}">'
                f"{escape(title)}</text></g>"
            ]
            cx = x + w / 2
            body_top = y + FRAME_HEAD + FRAME_PAD
            if body.h:
                out.append(_edge(cx, y, cx, body_top))
                out.append(_line(cx, body_top + body.h, cx, y + h))
            out += body.draw(cx - body.w / 2, body_top)
            if cls == "loop" and body.h:
                right = cx + body.w / 2
                rx = right + back / 2 + 4
                out.append(
                    f'<path class="edge back" d="M{right:.1f},{body_top + body.h - 12:.1f} '
                    f'H{rx:.1f} V{body_top + 12:.1f} H{right + 1:.1f}" '
                    f'marker-end="url(#arrow)"/>'
                )
            return out

        return _Block(w, h, draw)


def _seconds(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    secs = float(value)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size and secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{secs:g}s"


def render_svg(
    definition: Mapping[str, Any], steps: Mapping[str, str], waiting_signal: str | None = None
) -> str:
    """The SVG (a string) of ``definition["root"]``, nodes coloured from ``steps``.

    ``steps`` maps checkpoint keys to step statuses (``completed``, ``failed``,
    ``running``...); nodes without a step are ``pending``, except a wait for
    ``waiting_signal`` (the signal the run is parked on), which is ``waiting``.
    """
    layout = _Layout(steps, waiting_signal)
    body = layout.block(definition.get("root") or {"kind": "sequence", "steps": []})
    start = layout.pill("start", "terminal")
    end = layout.pill("end", "terminal")
    w = max(body.w, PILL_W) + 2 * MARGIN
    h = PILL_H * 2 + body.h + GAP_Y * 2 + 2 * MARGIN
    cx = w / 2
    parts = start.draw(cx - PILL_W / 2, MARGIN)
    top = MARGIN + PILL_H + GAP_Y
    parts.append(_edge(cx, MARGIN + PILL_H, cx, top))
    parts += body.draw(cx - body.w / 2, top)
    parts.append(_edge(cx, top + body.h, cx, top + body.h + GAP_Y))
    parts += end.draw(cx - PILL_W / 2, top + body.h + GAP_Y)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" role="img" '
        f'aria-label="workflow graph" width="{w:.0f}" height="{h:.0f}" '
        f'viewBox="0 0 {w:.0f} {h:.0f}"><defs><marker id="arrow" viewBox="0 0 10 10" '
        f'refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z"/></marker></defs>{"".join(parts)}</svg>'
    )
