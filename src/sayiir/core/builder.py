"""The low-level builder (exported as ``sayiir.FlowBuilder``): ids and metadata, no callables.

``Flow`` sits on top of it and keeps the task registry; this module owns the node
tree, the generated ids (``lambda_N``, ``branch_N``, ``loop_N``, ``child_N``) and the
structural checks, so a definition built by hand is checked exactly like one built
by ``Flow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TypeAlias

from sayiir.core.durations import to_seconds
from sayiir.core.keys import assign_keys, check_keys, check_names
from sayiir.core.metadata import RetryPolicy, TaskMetadata
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
    walk_nodes,
)

__all__ = ["FlowBuilder", "Step", "envelope_task_id"]

Step: TypeAlias = tuple[str, TaskMetadata | None] | Node
"""One element of a branch: a task as ``(task_id, metadata)``, or a ready node (a child)."""

_ON_MAX = ("fail", "exit_with_last")

# Generated ids that name registry entries (``lambda_N``, ``branch_N::key_fn``) skip ids
# already in the tree: reusing one would run another step's callable (the reference's
# child-workflow bug). ``loop_N`` and ``child_N`` keep the reference's numbering, where a
# repeat across a parent and its child is harmless.
_REGISTRY_PREFIXES = frozenset({"lambda", "branch"})


class FlowBuilder:
    """Append nodes in order, then ``build()`` an immutable ``WorkflowDefinition``.

    Generated ``lambda_N`` and ``branch_N`` ids skip ids already in the tree (e.g. those
    of an inlined child), so composing workflows does not reuse a registry id.

    >>> b = FlowBuilder("orders")
    >>> b.then("validate")
    >>> b.add_loop("poll", max_iterations=5)
    'loop_0'
    >>> [n.id for n in b.build().iter_nodes()]
    ['validate', 'loop_0', 'poll']
    """

    __slots__ = ("_counters", "_metadata_json", "_name", "_nodes", "_taken")

    def __init__(self, name: str) -> None:
        self._name = name
        self._nodes: list[Node] = []
        self._metadata_json: str | None = None
        self._counters: dict[str, int] = {}
        self._taken: set[str] = set()

    @property
    def name(self) -> str:
        return self._name

    # -- ids ---------------------------------------------------------------------------

    def next_lambda_id(self) -> str:
        """A fresh id for an anonymous task: ``lambda_0``, ``lambda_1``, ..."""
        return self._next("lambda")

    def next_child_id(self) -> str:
        """A fresh id for an inlined child workflow: ``child_0``, ``child_1``, ..."""
        return self._next("child")

    def _peek(self, prefix: str) -> tuple[str, int]:
        n = self._counters.get(prefix, 0)
        while prefix in _REGISTRY_PREFIXES and (
            f"{prefix}_{n}" in self._taken or key_fn_id(f"{prefix}_{n}") in self._taken
        ):
            n += 1
        return f"{prefix}_{n}", n

    def _next(self, prefix: str) -> str:
        new_id, n = self._peek(prefix)
        self._counters[prefix] = n + 1
        return new_id

    def append(self, node: Node) -> None:
        """Append a ready node, e.g. one made by ``child_node`` (ours; not in the reference)."""
        self._taken.update(n.id for n in walk_nodes((node,)))
        self._nodes.append(node)

    # -- steps -------------------------------------------------------------------------

    def then(self, task_id: str, metadata: TaskMetadata | None = None) -> None:
        """Append a task."""
        self.append(_task(task_id, metadata))

    def delay(self, delay_id: str, seconds: str | float | timedelta) -> None:
        """Append a durable timer of ``seconds`` (finite, non-negative)."""
        self.append(DelayNode(delay_id, to_seconds(seconds, "delay duration")))

    def wait_for_signal(
        self,
        signal_id: str,
        signal_name: str,
        timeout_secs: str | float | timedelta | None = None,
    ) -> None:
        """Append a wait for the signal ``signal_name``."""
        timeout = None if timeout_secs is None else to_seconds(timeout_secs, "timeout")
        self.append(SignalNode(signal_id, signal_name, timeout))

    def set_metadata_json(self, json: str | None) -> None:
        """Workflow metadata, already encoded as JSON."""
        self._metadata_json = json

    def add_fork(
        self,
        branches: Sequence[Sequence[Step]],
        join_id: str,
        join_metadata: TaskMetadata | None = None,
    ) -> None:
        """Append a fork; its join receives ``{first step id of each branch: last output}``."""
        if not branches:
            raise ValueError("Fork must have at least one branch")
        chains = tuple(_chain(b) for b in branches)
        keys = [chain[0].id for chain in chains]
        for i, key in enumerate(keys):
            if key in keys[:i]:  # the join dict would silently lose a branch
                raise ValueError(
                    f"Duplicate task id: {key!r} starts two branches of one fork; the join "
                    "receives {first step id: output} of each branch, so one output would be "
                    "lost: pass name= to one of the branches"
                )
        self.append(ForkNode("||".join(keys), chains, _task(join_id, join_metadata)))

    def add_branch(
        self,
        branches: Sequence[tuple[str, Sequence[Step]]],
        default: Sequence[Step] | None = None,
        *,
        keys: Sequence[str] | None = None,
    ) -> str:
        """Append a route and return its id (``branch_N``); ``keys`` are the declared keys."""
        if not branches:
            raise ValueError("Branch must have at least one step")
        seen: set[str] = set()
        converted: list[tuple[str, Chain]] = []
        for key, steps in branches:
            if key in seen:
                raise ValueError(f"Route: duplicate branches for key: {key}")
            seen.add(key)
            converted.append((key, _chain(steps)))
        default_chain = _chain(default) if default is not None else None
        route_id = self._next("branch")
        declared = tuple(keys) if keys is not None else None
        self.append(RouteNode(route_id, declared, tuple(converted), default_chain))
        return route_id

    def add_loop(
        self,
        body_task_id: str | Node,
        body_metadata: TaskMetadata | None = None,
        max_iterations: int = 10,
        on_max: str = "fail",
    ) -> str:
        """Append a loop and return its id (``loop_N``).

        ``body_task_id`` may also be a ready node (a ``ChildNode`` from ``child_node``).
        ``on_max`` accepts ``OnMax`` members too (they are strings).
        """
        loop_id, _ = self._peek("loop")
        policy = next((p for p in _ON_MAX if on_max == p), None)
        if policy is None:
            raise ValueError(f"Invalid on_max policy: {on_max!r}. Use 'fail' or 'exit_with_last'.")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
            raise TypeError(f"max_iterations must be an int, not {type(max_iterations).__name__}")
        if max_iterations < 1:
            raise ValueError(f"Loop '{loop_id}': max_iterations must be at least 1")
        body = _step(
            (body_task_id, body_metadata) if isinstance(body_task_id, str) else body_task_id
        )
        self._next("loop")
        self.append(LoopNode(loop_id, (body,), max_iterations, policy))
        return loop_id

    def child_node(
        self, child: FlowBuilder | WorkflowDefinition, child_id: str | None = None
    ) -> ChildNode:
        """A node inlining ``child``, for a branch or a loop body; ``None`` picks ``child_N``.

        The child's ids are reserved first, so later ``lambda_N``/``branch_N`` ids avoid them.
        """
        definition = child.build() if isinstance(child, FlowBuilder) else child
        self._taken.update(n.id for n in walk_nodes(definition.nodes))
        node_id = child_id if child_id is not None else self.next_child_id()
        self._taken.add(node_id)
        return ChildNode(node_id, definition.workflow_id, definition.nodes)

    def add_child_workflow(
        self, child_id: str | None, child_builder: FlowBuilder | WorkflowDefinition
    ) -> str:
        """Append ``child_builder``'s workflow inline; return the child node id."""
        node = self.child_node(child_builder, child_id)
        self.append(node)
        return node.id

    def build(self) -> WorkflowDefinition:
        """The compiled definition; the builder stays usable (``build()`` may be called again)."""
        if not self._nodes:
            raise ValueError("Workflow must have at least one task")
        nodes = assign_keys(tuple(self._nodes))
        check_names(self._name, nodes)
        check_keys(nodes)
        return WorkflowDefinition(self._name, nodes, self._metadata_json)

    def __repr__(self) -> str:
        return f"FlowBuilder(name={self._name!r}, nodes={len(self._nodes)})"


def envelope_task_id(chain: Chain) -> str | None:
    """The task whose return value is the output of ``chain``, if a task produces it.

    Used to make a child workflow usable as a loop body: that task's registry entry
    gets the loop wrapper. Delays pass their input through, so we look behind them; a
    signal or loop output comes from elsewhere (``None``). A route always outputs
    ``{"branch": ..., "result": ...}``, never an envelope, so it is rejected.
    """
    for node in reversed(chain):
        if isinstance(node, DelayNode):
            continue
        if isinstance(node, TaskNode):
            return node.id
        if isinstance(node, ForkNode):
            return node.join.id
        if isinstance(node, ChildNode):
            return envelope_task_id(node.body)
        if isinstance(node, RouteNode):
            raise ValueError(
                f"A loop body cannot end with route {node.id!r}: a route outputs "
                "{'branch': ..., 'result': ...}, never a LoopResult; add a final task"
            )
        return None
    return None


# -- helpers -----------------------------------------------------------------------------


def _snapshot(metadata: TaskMetadata | None) -> TaskMetadata | None:
    """Copy metadata (and its retry policy): later edits must not change a built definition."""
    if metadata is None:
        return None
    if not isinstance(metadata, TaskMetadata):
        raise TypeError(f"metadata must be a TaskMetadata, not {type(metadata).__name__}")
    copy = metadata.copy()
    r = metadata.retries
    if r is not None:
        copy.retries = RetryPolicy(r.max_retries, r.initial_delay_secs, r.backoff_multiplier)
    return copy


def _task(task_id: str, metadata: TaskMetadata | None) -> TaskNode:
    if not isinstance(task_id, str):
        raise TypeError(f"task id must be a str, not {type(task_id).__name__}")
    return TaskNode(task_id, _snapshot(metadata))


def _step(step: Step) -> Node:
    if isinstance(step, tuple):
        task_id, metadata = step
        return _task(task_id, metadata)
    if isinstance(step, Node):
        return step
    raise TypeError(f"a step is (task_id, metadata) or a node, not {type(step).__name__}")


def _chain(steps: Sequence[Step]) -> Chain:
    if not steps:
        raise ValueError("Branch must have at least one step")
    return tuple(_step(s) for s in steps)
