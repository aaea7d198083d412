"""The fluent ``Flow`` builder and the ``Workflow`` it builds.

``Flow`` turns callables into ids (spec §8.1), keeps a private task registry
(id -> the callable the engine invokes) and delegates structure to ``FlowBuilder``.

Beyond the reference, a built ``Workflow`` is accepted wherever a task is: in
``then``, in fork and route branches and as a loop body. It is inlined as a child
node (``child_N``, or ``name=``), which makes "a fork inside a loop" or "a route
inside a fork" expressible.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeAlias

from sayiir._callables import same_callable, wrap_loop, wrap_pydantic
from sayiir.core.builder import FlowBuilder, Step, envelope_task_id
from sayiir.core.limits import RunLimits
from sayiir.core.metadata import TaskMetadata
from sayiir.core.nodes import ChildNode, NodeInfo, WorkflowDefinition, key_fn_id
from sayiir.loop_result import OnMax

__all__ = ["BranchBuilder", "Flow", "ForkBuilder", "NodeInfo", "Workflow"]

TaskFn: TypeAlias = Callable[..., Any]
StepFn: TypeAlias = "TaskFn | Workflow"
"""A task function, or a built workflow inlined as a child."""


class Workflow:
    """A built workflow: the compiled definition plus the task registry it runs with.

    >>> wf = Flow("pipeline").then(lambda x: x * 2, name="double").build()
    >>> wf.workflow_id, len(wf.definition_hash)
    ('pipeline', 64)
    """

    def __init__(
        self,
        inner: WorkflowDefinition,
        task_registry: dict[str, TaskFn],
        builder: FlowBuilder | None = None,
    ) -> None:
        self._inner = inner
        self._task_registry = task_registry
        self._builder = builder
        # Run concurrency limits (Flow(max_concurrent_runs=..., concurrency_key=...)): not
        # part of the definition hash, enforced for submitted runs (docs/flow-control.md).
        self._limits: RunLimits | None = None

    @property
    def workflow_id(self) -> str:
        return self._inner.workflow_id

    @property
    def definition_hash(self) -> str:
        """SHA-256 of the structure; an instance only resumes under the same hash."""
        return self._inner.definition_hash

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The ``Flow(metadata=...)`` dict, decoded afresh on every access."""
        raw = self._inner.metadata_json
        return json.loads(raw) if raw is not None else None

    def iter_nodes(self) -> list[NodeInfo]:
        """Every node in execution order, with its predecessor (for UIs and docs)."""
        return self._inner.iter_nodes()

    def __repr__(self) -> str:
        return f"Workflow(workflow_id={self.workflow_id!r}, tasks={len(self._task_registry)})"


class Flow:
    """Build a workflow step by step; every method returns the flow (or a sub-builder).

    >>> from sayiir import run_workflow, task
    >>> @task
    ... def validate(order): return order
    >>> @task
    ... def charge(order): return order["total"]
    >>> @task
    ... def reserve(order): return len(order["items"])
    >>> @task
    ... def confirm(parts): return f"charged {parts['charge']}, reserved {parts['reserve']}"
    >>> wf = (
    ...     Flow("orders", metadata={"team": "billing"})
    ...     .then(validate)
    ...     .fork().branch(charge).branch(reserve).join(confirm)
    ...     .build()
    ... )
    >>> run_workflow(wf, {"total": 9.5, "items": ["pen", "ink"]})
    'charged 9.5, reserved 2'
    """

    def __init__(
        self,
        name: str = "workflow",
        *,
        metadata: dict[str, Any] | None = None,
        max_concurrent_runs: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        self._limits = RunLimits.of(
            max_concurrent_runs=max_concurrent_runs,
            concurrency_key=concurrency_key,
            max_concurrent=max_concurrent,
        )
        self._name = name
        self._builder = FlowBuilder(name)
        self._task_registry: dict[str, TaskFn] = {}
        self._conflicts: list[str] = []
        if metadata is not None:
            self._builder.set_metadata_json(json.dumps(metadata))

    # -- steps -------------------------------------------------------------------------

    def then(self, task_func: StepFn, *, name: str | None = None) -> Flow:
        """Append a task (``name`` overrides its id); a ``Workflow`` is inlined as a child."""
        if isinstance(task_func, Workflow):
            self._builder.append(self._child(task_func, name))
        else:
            task_id, metadata = self._register(task_func, name)
            self._builder.then(task_id, metadata)
        return self

    def delay(self, name: str, duration: str | float | timedelta) -> Flow:
        """Append a durable timer named ``name``; it passes its input through."""
        self._builder.delay(name, duration)
        return self

    def wait_for_signal(
        self,
        signal_name: str,
        *,
        name: str | None = None,
        timeout: str | float | timedelta | None = None,
    ) -> Flow:
        """Wait for the signal ``signal_name``; its payload becomes the next step's input."""
        self._builder.wait_for_signal(name or signal_name, signal_name, timeout)
        return self

    def then_flow(self, child_workflow: Workflow) -> Flow:
        """Inline a built workflow as the next step (node ``child_N``)."""
        if not isinstance(child_workflow, Workflow):
            raise TypeError(f"then_flow() expects a Workflow, not {type(child_workflow).__name__}")
        return self.then(child_workflow)

    def fork(self) -> ForkBuilder:
        """Start branches that all receive the same input; finish with ``join``."""
        return ForkBuilder(self)

    def route(self, key_fn: TaskFn, *, keys: Sequence[str] | None = None) -> BranchBuilder:
        """Run one branch chosen by ``key_fn(input)``; ``keys`` declares the valid keys.

        ``keys=None`` skips the declared-key checks (the keys are then open-ended).
        """
        return BranchBuilder(self, key_fn, keys=keys)

    def loop(
        self,
        task_func: StepFn,
        *,
        max_iterations: int = 10,
        on_max: str | OnMax = "fail",
        name: str | None = None,
    ) -> Flow:
        """Repeat ``task_func`` while it returns ``LoopResult.again(v)``.

        A ``Workflow`` body is inlined as a child; the task producing its output gets
        the loop wrapper, so it may return a ``LoopResult`` as well.
        """
        body: str | ChildNode
        metadata: TaskMetadata | None = None
        if isinstance(task_func, Workflow):
            body = self._child(task_func, name)
            last = envelope_task_id(body.body)
            if last is not None and last in self._task_registry:
                self._task_registry[last] = wrap_loop(self._task_registry[last])
        else:
            body, metadata = self._register(task_func, name)
            self._task_registry[body] = wrap_loop(self._task_registry[body])
        self._builder.add_loop(body, metadata, max_iterations, on_max)
        return self

    def build(self) -> Workflow:
        """Check the flow and compile it; the flow stays usable afterwards."""
        if self._conflicts:
            raise ValueError(
                f"Duplicate task id: {self._conflicts[0]!r} names two different functions; "
                "pass name= to tell them apart (one function may be used several times)"
            )
        inner = self._builder.build()
        workflow = Workflow(inner, dict(self._task_registry), self._builder)
        workflow._limits = self._limits
        return workflow

    # -- registry ----------------------------------------------------------------------

    def _task_id(self, fn: TaskFn, name: str | None) -> str:
        """Spec §8.1: ``name=``, then ``@task`` id, then ``__name__``, else ``lambda_N``."""
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"name must be a str, not {type(name).__name__}")
            return name
        task_id = getattr(fn, "_task_id", None)
        if isinstance(task_id, str):
            return task_id
        fn_name = getattr(fn, "__name__", None)
        if isinstance(fn_name, str) and fn_name != "<lambda>":
            return fn_name
        return self._builder.next_lambda_id()

    def _register(self, fn: TaskFn, name: str | None) -> tuple[str, TaskMetadata | None]:
        if not callable(fn):
            raise TypeError(f"expected a task function or a Workflow, not {type(fn).__name__}")
        task_id = self._task_id(fn, name)
        self._put(task_id, wrap_pydantic(fn))
        metadata = getattr(fn, "_metadata", None)
        return task_id, metadata if isinstance(metadata, TaskMetadata) else None

    def _put(self, task_id: str, fn: TaskFn) -> None:
        """Register ``fn``; two different callables under one id fail at ``build()``."""
        existing = self._task_registry.setdefault(task_id, fn)
        if not same_callable(existing, fn):
            self._conflicts.append(task_id)

    def _child(self, child: Workflow, name: str | None) -> ChildNode:
        """Merge ``child``'s registry into ours and make its child node (not yet placed)."""
        incoming = child._task_registry
        for task_id, fn in incoming.items():
            mine = self._task_registry.get(task_id)
            if mine is not None and not same_callable(mine, fn):
                hint = (
                    "; route ids are numbered per flow: inline the child before adding routes"
                    if task_id.endswith("::key_fn")
                    else "; pass name= to tell them apart"
                )
                raise ValueError(
                    f"Task id {task_id!r} of child workflow {child.workflow_id!r} is already "
                    f"used by a different callable in flow {self._name!r}{hint}"
                )
        for task_id, fn in incoming.items():
            self._task_registry.setdefault(task_id, fn)
        return self._builder.child_node(child._inner, name)

    def _steps(self, funcs: Sequence[StepFn], name: str | None) -> list[Step]:
        """A branch: ``name`` overrides the id of its first step (task or child)."""
        steps: list[Step] = []
        for i, fn in enumerate(funcs):
            step_name = name if i == 0 else None
            if isinstance(fn, Workflow):
                steps.append(self._child(fn, step_name))
            else:
                steps.append(self._register(fn, step_name))
        return steps


class ForkBuilder:
    """Branches of a fork; ``join`` closes it and returns the ``Flow``.

    >>> from sayiir import run_workflow
    >>> flow = Flow("f")
    >>> wf = (
    ...     flow.fork()
    ...     .branch(lambda x: x + 1, lambda x: x * 10, name="step_a")
    ...     .branch(lambda x: -x, name="other")
    ...     .join(lambda parts: sorted(parts.items()), name="merge")
    ...     .build()
    ... )
    >>> run_workflow(wf, 1)
    [['other', -1], ['step_a', 20]]
    """

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._branches: list[list[Step]] = []

    def branch(self, *task_funcs: StepFn, name: str | None = None) -> ForkBuilder:
        """Add a chain; its first step's id is its key in the join input."""
        if not task_funcs:
            raise ValueError("branch() requires at least one task function")
        self._branches.append(self._flow._steps(task_funcs, name))
        return self

    def join(self, task_func: TaskFn, *, name: str | None = None) -> Flow:
        """Combine ``{first step id: last output}`` of every branch with ``task_func``."""
        join_id, metadata = self._flow._register(task_func, name)
        self._flow._builder.add_fork(self._branches, join_id, metadata)
        return self._flow


class BranchBuilder:
    """Branches of a route, by key; ``done`` checks them and returns the ``Flow``.

    >>> from sayiir import run_workflow
    >>> flow = Flow("r")
    >>> wf = (
    ...     flow.route(lambda r: r["kind"], keys=["a", "b"])
    ...     .branch("a", lambda r: "handled a", name="handle_a")
    ...     .branch("b", lambda r: "handled b", name="handle_b")
    ...     .done()
    ...     .build()
    ... )
    >>> run_workflow(wf, {"kind": "b"})
    {'branch': 'b', 'result': 'handled b'}
    """

    def __init__(self, flow: Flow, key_fn: TaskFn, *, keys: Sequence[str] | None = None) -> None:
        if not callable(key_fn):
            raise TypeError(f"route() expects a key function, not {type(key_fn).__name__}")
        self._flow = flow
        self._key_fn = key_fn
        self._keys_shown = repr(keys)
        self._declared = None if keys is None else list(dict.fromkeys(map(_check_key, keys)))
        self._keys = None if self._declared is None else frozenset(self._declared)
        self._branches: list[tuple[str, list[Step]]] = []
        self._default: list[Step] | None = None

    def branch(self, key: str, *task_funcs: StepFn, name: str | None = None) -> BranchBuilder:
        """Run ``task_funcs`` (a chain) when the key function returns ``key``."""
        if not task_funcs:
            raise ValueError("branch() requires at least one task function")
        _check_key(key)
        if self._keys is not None and key not in self._keys:
            raise ValueError(f"Branch key '{key}' is not in the declared keys: {self._keys_shown}")
        if any(k == key for k, _ in self._branches):
            raise ValueError(f"Route: duplicate branches for key: {key}")
        self._branches.append((key, self._flow._steps(task_funcs, name)))
        return self

    def default_branch(self, *task_funcs: StepFn, name: str | None = None) -> BranchBuilder:
        """Run ``task_funcs`` for any other key; a second call replaces the first."""
        if not task_funcs:
            raise ValueError("default_branch() requires at least one task function")
        self._default = self._flow._steps(task_funcs, name)
        return self

    def done(self) -> Flow:
        """Check the branches against the declared keys and add the route to the flow."""
        if self._keys is not None:
            branched = {key for key, _ in self._branches}
            orphans = branched - self._keys
            if orphans:
                raise ValueError(f"Route: orphan branches for keys: {', '.join(sorted(orphans))}")
            missing = self._keys - branched
            if self._default is None and missing:
                raise ValueError(f"Route: missing branches for keys: {', '.join(sorted(missing))}")
        route_id = self._flow._builder.add_branch(
            self._branches, self._default, keys=self._declared
        )
        self._flow._put(key_fn_id(route_id), wrap_pydantic(self._key_fn))
        return self._flow


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"branch keys are strings, not {type(key).__name__}")
    return key
