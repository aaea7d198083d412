"""The Flow graph drawn from a stored definition: every shape, colours, escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from sayiir import Flow
from sayiir.core.graph import definition_json
from sayiir.ui._graph import render_svg

SVG = "{http://www.w3.org/2000/svg}"


def _task(name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "task", "id": name, "key": name, "timeout": None, "retries": 0, **extra}


def _seq(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "sequence", "steps": list(nodes)}


EVERY_SHAPE = {
    "workflow_id": "order",
    "definition_hash": "h",
    "root": _seq(
        _task("validate", retries=3, timeout=30.0),
        {
            "kind": "fork",
            "id": "fan",
            "branches": [_seq(_task("charge")), _seq(_task("reserve"))],
            "join": _task("merge"),
        },
        {
            "kind": "signal",
            "id": "approve",
            "key": "approve",
            "signal": "approved",
            "timeout": 86400.0,
        },
        {"kind": "delay", "id": "cool", "key": "cool", "seconds": 300.0},
        {
            "kind": "route",
            "id": "kind",
            "key": "kind::route",
            "branches": {"gift": _seq(_task("wrap")), "plain": _seq(_task("box"))},
            "default": _seq(_task("other")),
        },
        {
            "kind": "loop",
            "id": "poll",
            "key": "poll",
            "max_iterations": 5,
            "body": _seq(_task("check")),
        },
        {
            "kind": "child",
            "id": "ship",
            "key": "ship",
            "workflow_id": "shipping",
            "root": _seq(_task("label")),
        },
    ),
}


def _statuses(svg: str) -> dict[str, str]:
    root = ET.fromstring(svg)  # also proves the SVG is well-formed XML
    return {
        g.attrib["data-key"]: g.attrib["data-status"]
        for g in root.iter(f"{SVG}g")
        if "data-key" in g.attrib
    }


def test_every_node_is_drawn_once_with_its_key() -> None:
    keys = _statuses(render_svg(EVERY_SHAPE, {}))
    assert set(keys) == {
        "validate", "charge", "reserve", "merge", "approve", "cool", "kind::route",
        "wrap", "box", "other", "poll", "check", "ship", "label",
    }  # fmt: skip
    assert set(keys.values()) == {"pending"}


def test_nodes_are_coloured_by_the_runs_steps() -> None:
    steps = {"validate": "completed", "charge": "failed", "approve": "running"}
    keys = _statuses(render_svg(EVERY_SHAPE, steps))
    assert keys["validate"] == "completed"
    assert keys["charge"] == "failed"
    assert keys["approve"] == "running"
    assert keys["reserve"] == "pending"


def test_a_loop_body_node_takes_its_latest_iteration() -> None:
    steps = {"poll@0/check": "completed", "poll@1/check": "completed", "poll@2/check": "failed"}
    assert _statuses(render_svg(EVERY_SHAPE, steps))["check"] == "failed"
    steps = {"poll@9/check": "completed", "poll@10/check": "running"}  # numeric, not text
    assert _statuses(render_svg(EVERY_SHAPE, steps))["check"] == "running"


def test_route_arms_carry_their_values_as_labels() -> None:
    svg = render_svg(EVERY_SHAPE, {})
    labels = re.findall(r'class="edge-label"[^>]*>([^<]*)<', svg)
    assert labels == ["gift", "plain", "default"]


def test_user_text_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    doc = {"root": _seq(_task(evil), {"kind": "signal", "id": "s", "key": "s", "signal": evil})}
    svg = render_svg(doc, {evil: 'completed"><script>'})
    assert "<script>" not in svg
    ET.fromstring(svg)


def test_a_real_flow_definition_renders() -> None:
    wf = (
        Flow("greet")
        .then(lambda x: x, name="hello")
        .wait_for_signal("go")
        .then(lambda x: x, name="bye")
        .build()
    )
    keys = _statuses(render_svg(definition_json(wf), {"hello": "completed"}))
    assert keys["hello"] == "completed"
    assert keys["bye"] == "pending"
    assert len(keys) == 3
