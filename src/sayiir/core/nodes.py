"""The compiled workflow: an immutable tree of nodes and its definition hash.

A workflow is a *chain* (tuple of nodes). Composite nodes hold chains of their
own: fork branches, route branches, loop bodies and child workflows. The engine
interprets this tree; the builder (``sayiir.flow``) produces it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from sayiir.core.metadata import RetryPolicy, TaskMetadata

__all__ = [
    "Chain",
    "ChildNode",
    "DelayNode",
    "ForkNode",
    "LoopNode",
    "Node",
    "NodeInfo",
    "RouteNode",
    "SignalNode",
    "TaskNode",
    "WorkflowDefinition",
    "key_fn_id",
    "loop_iterations",
    "loop_scope",
    "occurrence_key",
    "timeout_key",
    "walk_nodes",
]

# Checkpoint key formats (``core.keys`` checks that no two steps share a key). They are
# stored with every run: changing one strands the runs in flight.


def key_fn_id(route_id: str) -> str:
    """Registry id and checkpoint key of a route's key function (``"branch_0::key_fn"``)."""
    return f"{route_id}::key_fn"


def occurrence_key(step_id: str, n: int) -> str:
    """Checkpoint key of the ``n``-th step using ``step_id``: ``id``, then ``id#2``, ..."""
    return step_id if n == 1 else f"{step_id}#{n}"


def timeout_key(key: str) -> str:
    """Checkpoint key of the deadline of the signal wait keyed ``key``."""
    return f"{key}~timeout"


def loop_scope(scope: str, loop_id: str, iteration: int) -> str:
    """The prefix of the keys of iteration ``iteration`` of a loop: ``"loop_0@2/"``."""
    return f"{scope}{loop_id}@{iteration}/"


_LOOP_SCOPES = re.compile(r"(?:loop_\d+@\d+/)+")


def loop_iterations(prefix: str) -> list[int] | None:
    """The iteration numbers of a key prefix made of loop scopes only, else ``None``.

    >>> loop_iterations("loop_0@2/loop_1@10/"), loop_iterations("a/")
    ([2, 10], None)
    """
    if _LOOP_SCOPES.fullmatch(prefix) is None:
        return None
    return [int(part.rpartition("@")[2]) for part in prefix.split("/")[:-1]]


@dataclass(frozen=True, slots=True)
class TaskNode:
    """Run the registry callable ``id`` on the current value.

    ``key`` is the checkpoint key: the id, or ``id#N`` for the N-th task using the id
    (a task may be used several times; each use needs its own checkpoint).
    """

    id: str
    metadata: TaskMetadata | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.id)


@dataclass(frozen=True, slots=True)
class DelayNode:
    """Durable timer: park until ``seconds`` after first reaching the node; pass input through.

    ``key`` is the checkpoint key: the id, or ``id#N`` for the N-th node reusing an id
    (several waits may share a name; each needs its own checkpoint).
    """

    id: str
    seconds: float
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.id)


@dataclass(frozen=True, slots=True)
class SignalNode:
    """Wait for one event named ``signal_name``; its payload becomes the current value."""

    id: str
    signal_name: str
    timeout_secs: float | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.id)


@dataclass(frozen=True, slots=True)
class ForkNode:
    """Run every branch on the same input, then ``join`` on ``{first_task_id: last_output}``."""

    id: str
    branches: tuple[Chain, ...]
    join: TaskNode

    @property
    def branch_keys(self) -> tuple[str, ...]:
        return tuple(_first_id(b) for b in self.branches)


@dataclass(frozen=True, slots=True)
class RouteNode:
    """Pick one chain by the string returned by the key function; output ``{branch, result}``."""

    id: str
    keys: tuple[str, ...] | None
    branches: tuple[tuple[str, Chain], ...]
    default: Chain | None = None


@dataclass(frozen=True, slots=True)
class LoopNode:
    """Repeat ``body`` while it returns ``LoopResult.again``; at most ``max_iterations`` times."""

    id: str
    body: Chain
    max_iterations: int = 10
    on_max: str = "fail"


@dataclass(frozen=True, slots=True)
class ChildNode:
    """A previously built workflow inlined as one step (same instance, same checkpoints)."""

    id: str
    workflow_id: str
    body: Chain


Node: TypeAlias = TaskNode | DelayNode | SignalNode | ForkNode | RouteNode | LoopNode | ChildNode
Chain: TypeAlias = tuple[Node, ...]

_KINDS: dict[type[Any], str] = {
    TaskNode: "task",
    DelayNode: "delay",
    SignalNode: "await_signal",
    ForkNode: "fork",
    RouteNode: "branch",
    LoopNode: "loop",
    ChildNode: "child_workflow",
}


def walk_nodes(chain: Chain) -> Iterator[Node]:
    """Every node of ``chain``, composites and their contents, joins included."""
    for node in chain:
        yield node
        if isinstance(node, ForkNode):
            for branch in node.branches:
                yield from walk_nodes(branch)
            yield node.join
        elif isinstance(node, RouteNode):
            for _, branch in node.branches:
                yield from walk_nodes(branch)
            if node.default is not None:
                yield from walk_nodes(node.default)
        elif isinstance(node, LoopNode | ChildNode):
            yield from walk_nodes(node.body)


def _first_id(chain: Chain) -> str:
    return chain[0].id


class NodeInfo:
    """Read-only description of one node, as listed by ``Workflow.iter_nodes()``.

    >>> from sayiir import Flow
    >>> workflow = (
    ...     Flow("w").then(lambda x: x, name="a")
    ...     .fork().branch(lambda x: x, name="b").branch(lambda x: x, name="c")
    ...     .join(lambda parts: parts, name="d")
    ...     .build()
    ... )
    >>> [(n.id, n.kind) for n in workflow.iter_nodes()]
    [('a', 'task'), ('b||c', 'fork'), ('b', 'task'), ('c', 'task'), ('d', 'task')]
    """

    __slots__ = ("id", "kind", "predecessor_id", "priority", "retry_policy", "timeout_secs")

    def __init__(
        self,
        id: str,
        kind: str,
        predecessor_id: str | None = None,
        timeout_secs: float | None = None,
        retry_policy: RetryPolicy | None = None,
        priority: int | None = None,
    ) -> None:
        self.id = id
        self.kind = kind
        self.predecessor_id = predecessor_id
        self.timeout_secs = timeout_secs
        self.retry_policy = retry_policy
        self.priority = priority

    def __repr__(self) -> str:
        return f"NodeInfo(id={self.id!r}, kind={self.kind!r})"


def _info(node: Node, pred: str | None) -> NodeInfo:
    kind = _KINDS[type(node)]
    if isinstance(node, TaskNode):
        meta = node.metadata
        return NodeInfo(
            node.id,
            kind,
            pred,
            meta.timeout_secs if meta else None,
            meta.retries if meta else None,
            meta.priority if meta else None,
        )
    if isinstance(node, DelayNode):
        return NodeInfo(node.id, kind, pred, node.seconds)
    if isinstance(node, SignalNode):
        return NodeInfo(node.id, kind, pred, node.timeout_secs)
    return NodeInfo(node.id, kind, pred)


def _walk(chain: Chain, pred: str | None, out: list[NodeInfo]) -> None:
    """Flatten in the reference order (see spec §7.3)."""
    for node in chain:
        out.append(_info(node, pred))
        if isinstance(node, ForkNode):
            for branch in node.branches:
                _walk(branch, node.id, out)
            out.append(_info(node.join, node.id))
            pred = node.join.id  # reference: the step after a fork follows its join
            continue
        if isinstance(node, RouteNode):
            for _, branch in node.branches:
                _walk(branch, node.id, out)
            if node.default is not None:
                _walk(node.default, node.id, out)
        elif isinstance(node, LoopNode | ChildNode):
            _walk(node.body, node.id, out)
        pred = node.id


def _shape(chain: Chain) -> list[Any]:
    """The hashed structure: kinds, ids and behaviour-relevant settings, not names or code."""
    out: list[Any] = []
    for node in chain:
        if isinstance(node, TaskNode):
            meta = node.metadata
            retry = meta.retries if meta else None
            out.append(
                [
                    "task",
                    node.id,
                    round(meta.timeout_secs * 1000) if meta and meta.timeout_secs else None,
                    [retry.max_retries, retry.initial_delay_secs, retry.backoff_multiplier]
                    if retry
                    else None,
                    meta.version if meta else None,
                ]
            )
        elif isinstance(node, DelayNode):
            out.append(["delay", node.id, node.seconds])
        elif isinstance(node, SignalNode):
            out.append(["signal", node.id, node.signal_name, node.timeout_secs])
        elif isinstance(node, ForkNode):
            out.append(["fork", node.id, [_shape(b) for b in node.branches], _shape((node.join,))])
        elif isinstance(node, RouteNode):
            out.append(
                [
                    "route",
                    node.id,
                    list(node.keys) if node.keys is not None else None,
                    [[k, _shape(b)] for k, b in node.branches],
                    _shape(node.default) if node.default is not None else None,
                ]
            )
        elif isinstance(node, LoopNode):
            out.append(["loop", node.id, _shape(node.body), node.max_iterations, node.on_max])
        else:
            out.append(["child", node.id, _shape(node.body)])
    return out


class WorkflowDefinition:
    """The compiled, immutable workflow (the reference's ``Workflow._inner``).

    Engines interpret ``nodes``; the hash identifies the structure so that an
    instance is never resumed by a definition it was not started with.
    """

    __slots__ = ("_hash", "metadata_json", "nodes", "runtime_cache", "workflow_id")

    def __init__(self, workflow_id: str, nodes: Chain, metadata_json: str | None = None) -> None:
        self.workflow_id = workflow_id
        self.nodes = nodes
        self.metadata_json = metadata_json
        text = json.dumps(_shape(nodes), separators=(",", ":"), sort_keys=True)
        self._hash = hashlib.sha256(text.encode()).hexdigest()
        # Per-callable data the engine derives once (runtime metadata), not per run.
        self.runtime_cache: dict[Any, Any] = {}

    @property
    def definition_hash(self) -> str:
        return self._hash

    def iter_nodes(self) -> list[NodeInfo]:
        out: list[NodeInfo] = []
        _walk(self.nodes, None, out)
        return out

    def __repr__(self) -> str:
        return f"WorkflowDefinition(workflow_id={self.workflow_id!r}, hash={self._hash[:12]}…)"
