"""The structure of a workflow as plain JSON, stored once per definition hash.

The console draws any run's graph from this document, without importing the user's code:
each node that has a ``key`` is the checkpoint key of that step (inside a loop, keys carry
the iteration scope ``loop_0@2/``), so a node is coloured by the run's steps of that key.

Node shapes (``kind`` first)::

    {"kind": "sequence", "steps": [NODE, ...]}
    {"kind": "task", "id", "key", "timeout": float|null, "retries": int}
    {"kind": "delay", "id", "key", "seconds": float}
    {"kind": "signal", "id", "key", "signal": str, "timeout": float|null}
    {"kind": "fork", "id", "branches": [NODE, ...], "join": NODE|null}
    {"kind": "route", "id", "key", "branches": {"value": NODE, ...}, "default": NODE|null}
    {"kind": "loop", "id", "key", "body": NODE, "max_iterations": int}
    {"kind": "child", "id", "key", "workflow_id": str, "root": NODE}
"""

from __future__ import annotations

import json
from typing import Any

from sayiir.core.nodes import (
    Chain,
    ChildNode,
    DelayNode,
    ForkNode,
    LoopNode,
    Node,
    RouteNode,
    SignalNode,
    TaskNode,
    WorkflowDefinition,
    key_fn_id,
)

__all__ = ["definition_json", "definition_text"]

_TEXT_CACHE = "definition_json_text"


def _definition(workflow: object) -> WorkflowDefinition:
    inner = getattr(workflow, "_inner", workflow)  # a sayiir Workflow wraps its definition
    if not isinstance(inner, WorkflowDefinition):
        raise TypeError(
            f"expected a Workflow (Flow(...).build()) or a WorkflowDefinition, "
            f"not {type(workflow).__name__}"
        )
    return inner


def definition_json(workflow: object) -> dict[str, Any]:
    """The workflow's structure as a JSON-able dict (pure: no I/O, standard library only).

    >>> from sayiir import Flow
    >>> wf = Flow("greet").then(lambda x: x, name="hello").build()
    >>> doc = definition_json(wf)
    >>> doc["workflow_id"], doc["root"]["steps"][0]["kind"], doc["root"]["steps"][0]["key"]
    ('greet', 'task', 'hello')
    """
    definition = _definition(workflow)
    return {
        "workflow_id": definition.workflow_id,
        "definition_hash": definition.definition_hash,
        "root": _chain(definition.nodes),
    }


def definition_text(workflow: object) -> str:
    """``definition_json`` as compact JSON text, computed once per definition (cached on it),
    so storing it at each run start costs nothing after the first."""
    definition = _definition(workflow)
    cached = definition.runtime_cache.get(_TEXT_CACHE)
    if cached is None:
        cached = json.dumps(definition_json(definition), separators=(",", ":"), sort_keys=True)
        definition.runtime_cache[_TEXT_CACHE] = cached
    return str(cached)


def _chain(chain: Chain) -> dict[str, Any]:
    return {"kind": "sequence", "steps": [_node(node) for node in chain]}


def _node(node: Node) -> dict[str, Any]:
    if isinstance(node, TaskNode):
        meta = node.metadata
        retry = meta.retries if meta is not None else None
        return {
            "kind": "task",
            "id": node.id,
            "key": node.key,
            "timeout": meta.timeout_secs if meta is not None else None,
            "retries": retry.max_retries if retry is not None else 0,
        }
    if isinstance(node, DelayNode):
        return {"kind": "delay", "id": node.id, "key": node.key, "seconds": node.seconds}
    if isinstance(node, SignalNode):
        return {
            "kind": "signal",
            "id": node.id,
            "key": node.key,
            "signal": node.signal_name,
            "timeout": node.timeout_secs,
        }
    if isinstance(node, ForkNode):
        return {
            "kind": "fork",
            "id": node.id,
            "branches": [_chain(branch) for branch in node.branches],
            "join": _node(node.join),
        }
    if isinstance(node, RouteNode):
        return {
            "kind": "route",
            "id": node.id,
            "key": key_fn_id(node.id),
            "branches": {value: _chain(branch) for value, branch in node.branches},
            "default": _chain(node.default) if node.default is not None else None,
        }
    if isinstance(node, LoopNode):
        return {
            "kind": "loop",
            "id": node.id,
            "key": node.id,
            "body": _chain(node.body),
            "max_iterations": node.max_iterations,
        }
    assert isinstance(node, ChildNode)
    return {
        "kind": "child",
        "id": node.id,
        "key": node.id,
        "workflow_id": node.workflow_id,
        "root": _chain(node.body),
    }
