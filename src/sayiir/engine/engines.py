"""The engine classes users hold: ``WorkflowEngine``, ``DurableEngine``, ``CheckpointingRunner``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from sayiir.backends.protocol import AsyncStorage, Storage
from sayiir.core.codec import JsonCodec
from sayiir.core.nodes import WorkflowDefinition
from sayiir.core.status import WorkflowStatus
from sayiir.engine import _gate, _lease, _runs
from sayiir.engine._drive import adrive, drive
from sayiir.engine._effects import Effects
from sayiir.engine._hooks import ACTIVE

__all__ = [
    "CheckpointingRunner",
    "Controls",
    "DurableEngine",
    "WorkflowEngine",
    "backend_storage",
    "resolve",
]

Registry = Mapping[str, Callable[[Any], Any]]
_JSON = JsonCodec()
_S = TypeVar("_S")
_St = TypeVar("_St", Storage, AsyncStorage)


def _hooked(
    registry: Registry, storage: _S, engine: Any = None, *run: Any
) -> tuple[Registry, _S, Callable[[], float]]:
    """The tasks, storage and clock of one call: the real ones unless ``sayiir.testing``
    installed hooks (a virtual clock, crash points, task mocks) for this test.

    ``run`` is ``(workflow, instance_id, task_registry)``: ``engine.resume(*run)``
    continues the run when the virtual clock reaches its timer.
    """
    hooks = ACTIVE.get()
    if hooks is None:
        return registry, storage, time.time
    if engine is not None:
        hooks.watch(storage, run[1], functools.partial(engine.resume, *run))
    registry, storage = hooks.prepare(registry, storage)
    return registry, storage, hooks.clock


def _execution(
    engine: Any,
    storage: _St,
    policy: str | None,
    run: tuple[Any, str, Registry | None],
    input: Any,
    *,
    inline: bool,
) -> tuple[Effects[WorkflowStatus], _St, str]:
    """The operation of one execution (a start when ``policy`` is given, else a resume),
    the storage it runs on and its token: one place for the sync and async engines."""
    workflow, instance_id, task_registry = run
    definition, registry = resolve(workflow, task_registry)
    _gate.check_storage(storage, definition)
    registry, s, clock = _hooked(registry, storage, engine, *run)
    token = _runs.new_token()
    if policy is None:
        op = _runs.resume_run(
            definition, registry, s.codec, instance_id, inline=inline, clock=clock, token=token
        )
    else:
        op = _runs.start_run(
            definition, registry, s.codec, instance_id, input, policy,
            inline=inline, clock=clock, token=token,
        )  # fmt: skip
    return op, s, token


def resolve(workflow: Any, registry: Registry | None) -> tuple[WorkflowDefinition, Registry]:
    """Accept a ``Workflow`` or its compiled ``_inner`` (with an explicit registry)."""
    definition = getattr(workflow, "_inner", workflow)
    if not isinstance(definition, WorkflowDefinition):
        raise TypeError(
            f"expected a Workflow built with Flow(...).build(), not {type(workflow).__name__}"
        )
    if registry is None:
        registry = getattr(workflow, "_task_registry", None)
        if registry is None:
            raise TypeError("a compiled workflow needs its task_registry")
    return definition, registry


_STORAGE_TYPES: set[type[Any]] = set()


def backend_storage(backend: object) -> Storage:
    """``backend`` as a ``Storage``, or a ``TypeError`` saying what is expected."""
    kind = type(backend)
    if kind in _STORAGE_TYPES:  # the protocol's isinstance is slow: checked once per type
        return cast(Storage, backend)
    if isinstance(backend, Storage):
        _STORAGE_TYPES.add(kind)
        return backend
    raise TypeError(
        "backend must be InMemoryBackend, SqliteBackend or PostgresBackend, "
        f"not {type(backend).__name__}"
    )


class WorkflowEngine:
    """Runs a workflow in memory, without checkpoints; returns the output.

    >>> from sayiir import Flow
    >>> wf = Flow("double").then(lambda x: x * 2, name="double").build()
    >>> WorkflowEngine().run(wf._inner, 21, wf._task_registry)
    42
    """

    def run(self, workflow: Any, input: Any, task_registry: Registry | None = None) -> Any:
        definition, registry = resolve(workflow, task_registry)
        if ACTIVE.get() is None:
            return drive(_runs.plain_run(definition, registry, _JSON, input), None)
        registry, _, clock = _hooked(registry, None)
        return drive(_runs.plain_run(definition, registry, _JSON, input, clock), None)

    def __repr__(self) -> str:
        return "WorkflowEngine()"


class Controls:
    """Cancel, pause, unpause and signal runs in ``self._storage`` (engines and the client)."""

    _storage: Storage

    def _cancel(self, instance_id: str, reason: str | None, by: str | None) -> None:
        drive(_runs.cancel_run(instance_id, reason, by), self._storage)

    def _pause(self, instance_id: str, reason: str | None, by: str | None) -> None:
        drive(_runs.pause_run(instance_id, reason, by), self._storage)

    def unpause(self, instance_id: str) -> None:
        """Make a paused run runnable again (it does not run it)."""
        drive(_runs.unpause_run(instance_id), self._storage)

    def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        """Buffer an event for ``wait_for_signal(signal_name)``."""
        s = self._storage
        drive(_runs.send_signal_op(s.codec, instance_id, signal_name, payload), s)


class DurableEngine(Controls):
    """Runs workflows with a checkpoint after every task, in the given backend.

    >>> from sayiir import Flow, InMemoryBackend
    >>> wf = Flow("double").then(lambda x: x * 2, name="double").build()
    >>> engine = DurableEngine(InMemoryBackend())
    >>> engine.run(wf._inner, "inst-1", 21, wf._task_registry).output
    42
    """

    def __init__(self, backend: Any, conflict_policy: str | None = None) -> None:
        self._storage = backend_storage(backend)
        self._policy = _runs.check_policy(conflict_policy)

    @property
    def backend(self) -> Storage:
        return self._storage

    def run(
        self,
        workflow: Any,
        instance_id: str,
        input: Any,
        task_registry: Registry | None = None,
    ) -> WorkflowStatus:
        return self._execute(self._policy, (workflow, instance_id, task_registry), input)

    def resume(
        self, workflow: Any, instance_id: str, task_registry: Registry | None = None
    ) -> WorkflowStatus:
        """Continue a run from its checkpoints; see ``resume_workflow``."""
        return self._execute(None, (workflow, instance_id, task_registry), None)

    def _execute(
        self, policy: str | None, run: tuple[Any, str, Registry | None], input: Any
    ) -> WorkflowStatus:
        op, s, token = _execution(self, self._storage, policy, run, input, inline=True)
        held = _lease.hold(self._storage, run[1], token)
        try:
            return drive(op, s)
        finally:
            _lease.release(held)

    def cancel(
        self, instance_id: str, reason: str | None = None, cancelled_by: str | None = None
    ) -> None:
        """Cancel a run: at once if nobody executes it, else at its next step boundary."""
        self._cancel(instance_id, reason, cancelled_by)

    def pause(
        self, instance_id: str, reason: str | None = None, paused_by: str | None = None
    ) -> None:
        """Pause a run: at once if nobody executes it, else at its next step boundary."""
        self._pause(instance_id, reason, paused_by)

    def __repr__(self) -> str:
        return f"DurableEngine(backend={self._storage!r}, conflict_policy={self._policy!r})"


def _async_storage(backend: object) -> AsyncStorage:
    """The asyncio form of a backend (``Storage.async_storage``), or an ``AsyncStorage``."""
    try:
        storage = backend_storage(backend)
    except TypeError:
        if isinstance(backend, AsyncStorage):
            return backend
        raise
    return storage.async_storage()


class CheckpointingRunner:
    """The asyncio form of ``DurableEngine``: async tasks run on your event loop.

    >>> import asyncio
    >>> from sayiir import Flow, InMemoryBackend
    >>> async def double(x):
    ...     await asyncio.sleep(0)
    ...     return x * 2
    >>> wf = Flow("double").then(double).build()
    >>> runner = CheckpointingRunner(InMemoryBackend())
    >>> asyncio.run(runner.run(wf, "order-123", 21)).output
    42

    With PostgreSQL, ``backend = await PostgresBackend.connect(url)`` opens an async pool.
    """

    def __init__(self, backend: Any, conflict_policy: str | None = None) -> None:
        self._storage = _async_storage(backend)
        self._policy = _runs.check_policy(conflict_policy)

    async def run(
        self,
        workflow: Any,
        instance_id: str,
        input: Any,
        task_registry: Registry | None = None,
    ) -> WorkflowStatus:
        return await self._execute(self._policy, (workflow, instance_id, task_registry), input)

    async def resume(
        self, workflow: Any, instance_id: str, task_registry: Registry | None = None
    ) -> WorkflowStatus:
        return await self._execute(None, (workflow, instance_id, task_registry), None)

    async def _execute(
        self, policy: str | None, run: tuple[Any, str, Registry | None], input: Any
    ) -> WorkflowStatus:
        op, s, token = _execution(self, self._storage, policy, run, input, inline=False)
        held = _lease.ahold(self._storage, run[1], token)
        try:
            return await adrive(op, s)
        finally:
            _lease.arelease(held)

    async def cancel(
        self, instance_id: str, reason: str | None = None, cancelled_by: str | None = None
    ) -> None:
        await adrive(_runs.cancel_run(instance_id, reason, cancelled_by), self._storage)

    async def pause(
        self, instance_id: str, reason: str | None = None, paused_by: str | None = None
    ) -> None:
        await adrive(_runs.pause_run(instance_id, reason, paused_by), self._storage)

    async def unpause(self, instance_id: str) -> None:
        await adrive(_runs.unpause_run(instance_id), self._storage)

    async def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        s = self._storage
        await adrive(_runs.send_signal_op(s.codec, instance_id, signal_name, payload), s)

    def __repr__(self) -> str:
        return f"CheckpointingRunner(conflict_policy={self._policy!r})"
