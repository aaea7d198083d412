"""Run histories: export one from any backend as JSON, replay it against new code.

A history holds the run's record (workflow, definition hash, status, input, output)
and its checkpoints, byte for byte (as the backend's codec wrote them). ``replay``
runs the new code on the recorded input in a throwaway in-memory backend, under a
virtual clock, feeding it the recorded signals, and compares each step's output with
the recorded one: the first step that differs, is missing or is new is the drift. Run
it in a test before deploying a change: resuming old runs with a changed definition is
refused, and a changed task body silently gives different outputs.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from sayiir.core.nodes import (
    Chain,
    ChildNode,
    DelayNode,
    ForkNode,
    LoopNode,
    RouteNode,
    SignalNode,
)
from sayiir.core.records import RunState, StepRecord
from sayiir.errors import InstanceNotFoundError

__all__ = ["FORMAT", "Drift", "ReplayReport", "export_history", "load_history", "replay"]

FORMAT = "sayiir.history/1"
_MAX_RESUMES = 1000


def _payload(data: bytes | None) -> dict[str, str] | None:
    if data is None:
        return None
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _bytes(payload: dict[str, str] | None) -> bytes | None:
    if payload is None:
        return None
    if "text" in payload:
        return payload["text"].encode("utf-8")
    return base64.b64decode(payload["base64"])


def history_of(state: RunState, codec_name: str) -> dict[str, Any]:
    """The JSON-able history of a loaded run."""
    rec = state.record
    return {
        "format": FORMAT,
        "instance_id": rec.instance_id,
        "workflow_id": rec.workflow_id,
        "definition_hash": rec.definition_hash,
        "codec": codec_name,
        "status": rec.status.value,
        "input": _payload(rec.input),
        "output": _payload(rec.output),
        "error": rec.error,
        "wake_at": rec.wake_at,
        "park_node": rec.park_node,
        "signal_name": rec.signal_name,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "completed_at": rec.completed_at,
        "checkpoints": [
            {"key": k, "value": _payload(v)} for k, v in sorted(state.checkpoints.items())
        ],
        "attempts": {
            k: {
                "failures": a.failures,
                "last_error": a.last_error,
                "next_retry_at": a.next_retry_at,
                "running_deadline": a.running_deadline,
            }
            for k, a in state.attempts.items()
        },
    }


def export_history(backend: Any, instance_id: str) -> dict[str, Any]:
    """The history of run ``instance_id`` in ``backend`` (any backend), as a JSON-able dict.

    >>> history = export_history(backend, "order-42")  # doctest: +SKIP
    >>> json.dump(history, open("order-42.json", "w"))  # doctest: +SKIP

    The command line does the same: ``sayiir history URL INSTANCE_ID``.
    """
    from sayiir.engine.engines import backend_storage

    storage = backend_storage(backend)
    state = storage.load(instance_id)
    if state is None:
        raise InstanceNotFoundError(instance_id)
    return history_of(state, storage.codec.name)


def load_history(source: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A history from a dict, a JSON text or a path to a JSON file; checks its format."""
    if isinstance(source, dict):
        history = source
    else:
        text = str(source)
        if not text.lstrip().startswith("{"):
            with open(source, encoding="utf-8") as f:
                text = f.read()
        history = json.loads(text)
    if not isinstance(history, dict) or history.get("format") != FORMAT:
        found = history.get("format") if isinstance(history, dict) else type(history).__name__
        raise ValueError(
            f"not a sayiir history (format {found!r}, expected {FORMAT!r}): export one with "
            "sayiir.testing.export_history or `sayiir history URL INSTANCE_ID`"
        )
    return history


@dataclass(frozen=True)
class Drift:
    """The first step whose replay differs from the recorded run.

    ``reason`` is ``"output"`` (same step, another output), ``"missing"`` (the recorded
    step no longer runs), ``"new"`` (the new code runs a step the recorded run did not,
    before the recorded run's last step) or ``"failed"`` (the new code fails there).
    """

    key: str
    reason: str
    recorded: Any = None
    replayed: Any = None

    def __str__(self) -> str:
        if self.reason == "output":
            return (
                f"step '{self.key}' drifted: recorded output {self.recorded!r}, "
                f"new code gives {self.replayed!r}"
            )
        if self.reason == "missing":
            return f"step '{self.key}' was recorded but the new code does not run it"
        if self.reason == "new":
            return f"step '{self.key}' is new: the recorded run did not run it at that point"
        return f"step '{self.key}' fails with the new code: {self.replayed}"


@dataclass(frozen=True)
class ReplayReport:
    """What ``replay`` found: ``ok`` when the new code reproduces the recorded run."""

    drift: Drift | None
    definition_changed: bool
    recorded_hash: str
    new_hash: str
    steps_compared: int

    @property
    def ok(self) -> bool:
        return self.drift is None and not self.definition_changed

    def __str__(self) -> str:
        lines = []
        if self.drift is not None:
            lines.append(f"first drift: {self.drift}")
        if self.definition_changed:
            lines.append(
                f"definition changed ({self.recorded_hash[:12]}... -> {self.new_hash[:12]}...): "
                "runs started with the old code cannot be resumed with this one"
            )
        if not lines:
            lines.append(f"no drift: {self.steps_compared} step(s) replay identically")
        return "\n".join(lines)


class _Recorder:
    """A storage that notes every checkpoint written (task outputs, in order)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.codec = storage.codec
        self.tasks: dict[str, bytes] = {}

    def __getattr__(self, op: str) -> Any:
        return getattr(self._storage, op)

    def _note(self, steps: Any) -> None:
        for step in steps:
            if isinstance(step, StepRecord) and step.task_id is not None:
                self.tasks.setdefault(step.key, step.output)

    def save_steps(self, instance_id: str, steps: Any, **kw: Any) -> Any:
        self._note(steps)
        return self._storage.save_steps(instance_id, steps, **kw)

    def finish(self, instance_id: str, final: Any, steps: Any, **kw: Any) -> Any:
        self._note(steps)
        return self._storage.finish(instance_id, final, steps, **kw)

    def record_attempt(self, instance_id: str, attempt: Any, **kw: Any) -> Any:
        return self._storage.record_attempt(instance_id, attempt, **kw)


def _waits(chain: Chain, signals: dict[str, str], timers: set[str]) -> None:
    """Collect the (unscoped) checkpoint keys of signal waits (with their signal name)
    and of delays: their checkpoints are not task outputs."""
    for node in chain:
        if isinstance(node, SignalNode):
            signals[node.key] = node.signal_name
        elif isinstance(node, DelayNode):
            timers.add(node.key)
        elif isinstance(node, ForkNode):
            for branch in node.branches:
                _waits(branch, signals, timers)
        elif isinstance(node, RouteNode):
            for _, branch in node.branches:
                _waits(branch, signals, timers)
            if node.default is not None:
                _waits(node.default, signals, timers)
        elif isinstance(node, LoopNode | ChildNode):
            _waits(node.body, signals, timers)


def replay(
    history: dict[str, Any] | str | os.PathLike[str], workflow: Any, task_registry: Any = None
) -> ReplayReport:
    """Run ``workflow`` (new code) on a recorded run's input; report the first drift.

    >>> report = replay("order-42.json", order_workflow)  # doctest: +SKIP
    >>> assert report.ok, str(report)  # doctest: +SKIP

    The new code's tasks really run (mock the ones with outside effects with
    ``mock_task``); timers and retry backoffs pass on a virtual clock; the signals the
    recorded run consumed are sent again in the same order.
    """
    from sayiir.backends.memory import InMemoryBackend
    from sayiir.engine.engines import DurableEngine, resolve
    from sayiir.testing._clock import virtual_time

    recorded = load_history(history)
    definition, _registry = resolve(workflow, task_registry)
    checkpoints = {c["key"]: _bytes(c["value"]) for c in recorded["checkpoints"]}
    signals: dict[str, str] = {}
    timers: set[str] = set()
    _waits(definition.nodes, signals, timers)
    backend = InMemoryBackend()
    recorder = _Recorder(backend)
    engine = DurableEngine(recorder)
    codec = backend.codec
    instance_id = recorded["instance_id"]
    for key, data in checkpoints.items():
        name = signals.get(key.rsplit("/", 1)[-1])
        if name is not None and data is not None:
            backend.send_signal(instance_id, name, data)
    value = codec.decode(_bytes(recorded["input"]) or b"null")
    with virtual_time(start=recorded.get("created_at") or None):
        status = engine.run(workflow, instance_id, value, task_registry)
        for _ in range(_MAX_RESUMES):
            if status.status != "waiting":
                break
            status = engine.resume(workflow, instance_id, task_registry)
    steps = {
        k: v
        for k, v in checkpoints.items()
        if not k.endswith("~timeout") and k.rsplit("/", 1)[-1] not in signals.keys() | timers
    }
    drift = _first_drift(steps, recorder.tasks, codec, status)
    new_hash = definition.definition_hash
    return ReplayReport(
        drift,
        recorded["definition_hash"] != new_hash,
        recorded["definition_hash"],
        new_hash,
        sum(1 for k in recorder.tasks if k in checkpoints),
    )


def _first_drift(
    recorded: dict[str, bytes | None], replayed: dict[str, bytes], codec: Any, status: Any
) -> Drift | None:
    """Walk the replayed steps in the order they ran; compare each with the record."""
    left = set(recorded)
    for key, data in replayed.items():
        if key not in recorded:
            if left:
                return Drift(key, "new", None, codec.decode(data))
            break  # past the recorded run's last step: nothing to compare with
        left.discard(key)
        old = recorded[key]
        old_value = None if old is None else codec.decode(old)
        new_value = codec.decode(data)
        if old_value != new_value:
            return Drift(key, "output", old_value, new_value)
    for key, old in recorded.items():
        if key in left:
            if status.status == "failed":
                return Drift(key, "failed", None, status.error)
            return Drift(key, "missing", None if old is None else codec.decode(old))
    return None
