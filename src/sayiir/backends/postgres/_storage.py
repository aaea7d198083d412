"""The ``Storage`` operations as calls, once for the sync and the async API.

Each function here turns a ``Storage`` method's arguments into a ``Call``: the name the
retry loop reports and the ``Make`` that builds one attempt's ``_ops`` generator. What is
fixed once per call (a token, a lease) is chosen here, so every attempt of a re-sent call
shares it. ``PostgresBackend`` runs these calls on the sync pool; ``AsyncPostgresStorage``
awaits the same calls on the async pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar
from uuid import uuid4

from sayiir.backends.postgres import _ops, _task_limits
from sayiir.backends.postgres._console import with_definition
from sayiir.backends.protocol import AsyncStorage
from sayiir.core.records import (
    AttemptRecord,
    ControlRequest,
    FinalState,
    InstanceRecord,
    RunState,
    Status,
    StepRecord,
)

if TYPE_CHECKING:
    from sayiir.backends.postgres._backend import PostgresBackend
    from sayiir.backends.postgres._runner import Make

__all__ = ["AsyncPostgresStorage", "Call"]

T = TypeVar("T")
Call = tuple[str, "Make[T]"]


def create_instance(
    record: InstanceRecord, replace: bool, lease: float, defined: set[str]
) -> Call[InstanceRecord | None]:
    """``defined``: the definition hashes this backend object stored (the first run start
    of each hash also inserts its definition, for the console)."""
    token = _ops.start_token(record)
    return "create_instance", lambda resent: with_definition(
        record,
        _ops.create_instance(record, replace=replace, token=token, retry=resent, lease_secs=lease),
        defined,
    )


def load(instance_id: str) -> Call[RunState | None]:
    return "load", lambda resent: _ops.load(instance_id)


def take_over(
    instance_id: str, token: str | None, new_token: str, lease: float
) -> Call[InstanceRecord | None]:
    return "take_over", lambda resent: _ops.take_over(instance_id, token, new_token, lease)


def renew_lease(instance_id: str, token: str, release: bool, lease: float) -> Call[bool]:
    held = 0.0 if release else lease
    return "renew_lease", lambda resent: _ops.renew_lease(instance_id, token, held)


def save_steps(
    instance_id: str, steps: Sequence[StepRecord], token: str | None, lease: float
) -> Call[ControlRequest | None]:
    return "save_steps", lambda resent: _ops.save_steps(instance_id, steps, token, lease)


def record_attempt(
    instance_id: str, attempt: AttemptRecord, token: str | None, lease: float
) -> Call[ControlRequest | None]:
    return "record_attempt", lambda resent: _ops.record_attempt(instance_id, attempt, token, lease)


def consume_signal(
    instance_id: str, signal_name: str, key: str, token: str | None, lease: float
) -> Call[bytes | None]:
    return "consume_signal", lambda resent: _ops.consume_signal(
        instance_id, signal_name, key, token, lease
    )


def finish(
    instance_id: str, final: FinalState, steps: Sequence[StepRecord], token: str | None
) -> Call[ControlRequest | None]:
    return "finish", lambda resent: _ops.finish(instance_id, final, steps, token)


def get_instance(instance_id: str) -> Call[InstanceRecord | None]:
    return "get_instance", lambda resent: _ops.get_instance(instance_id)


def get_checkpoint(instance_id: str, key: str) -> Call[bytes | None]:
    return "get_checkpoint", lambda resent: _ops.get_checkpoint(instance_id, key)


def request_control(instance_id: str, request: ControlRequest) -> Call[Status | None]:
    return "request_control", lambda resent: _ops.request_control(instance_id, request)


def unpause(instance_id: str) -> Call[Status | None]:
    return "unpause", lambda resent: _ops.unpause(instance_id)


def send_signal(instance_id: str, signal_name: str, payload: bytes) -> Call[Status | None]:
    send_id = uuid4()
    return "send_signal", lambda resent: _ops.send_signal(
        instance_id, signal_name, payload, send_id=send_id
    )


def acquire_task_slot(
    task_id: str, limit: int, instance_id: str, step_key: str, owner: str, attempt: int | None
) -> Call[bool]:
    return "acquire_task_slot", lambda resent: _task_limits.acquire_task_slot(
        task_id, limit, instance_id, step_key, owner, attempt
    )


def release_task_slot(task_id: str, instance_id: str, step_key: str) -> Call[None]:
    return "release_task_slot", lambda resent: _task_limits.release_task_slot(
        task_id, instance_id, step_key
    )


def take_rate_token(
    task_id: str, bucket: str, n: int, per: float, now: float, instance_id: str, step_key: str
) -> Call[float]:
    return "take_rate_token", lambda resent: _task_limits.take_rate_token(
        task_id, bucket, n, per, now, instance_id, step_key
    )


class AsyncPostgresStorage(AsyncStorage):
    """``AsyncStorage`` over a ``PostgresBackend``: the same operations on the async pool,
    with group commit of concurrent writes (``_group``)."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._b = backend
        # Writes of concurrent runs are committed in groups (``_group``); the rest goes
        # straight to ``Runner.arun``.
        self._arun = backend._group.run
        self.codec = backend.codec
        self.lease_secs = backend.lease_secs
        self._defined = backend._defined  # shared: one insert per hash per backend object

    def __repr__(self) -> str:
        return f"AsyncPostgresStorage({self._b!r})"

    # -- generated by scripts/gen_storage.py from Storage: do not edit --

    async def create_instance(
        self, record: InstanceRecord, *, replace: bool
    ) -> InstanceRecord | None:
        return await self._arun(*create_instance(record, replace, self.lease_secs, self._defined))

    async def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        return await self._arun(*take_over(instance_id, token, new_token, self.lease_secs))

    async def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        return await self._arun(*renew_lease(instance_id, token, release, self.lease_secs))

    async def load(self, instance_id: str) -> RunState | None:
        return await self._arun(*load(instance_id))

    async def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        return await self._arun(*save_steps(instance_id, steps, token, self.lease_secs))

    async def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        return await self._arun(*record_attempt(instance_id, attempt, token, self.lease_secs))

    async def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        return await self._arun(
            *consume_signal(instance_id, signal_name, key, token, self.lease_secs)
        )

    async def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        return await self._arun(*finish(instance_id, final, steps, token))

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return await self._arun(*get_instance(instance_id))

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        return await self._arun(*get_checkpoint(instance_id, key))

    async def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        return await self._arun(*request_control(instance_id, request))

    async def unpause(self, instance_id: str) -> Status | None:
        return await self._arun(*unpause(instance_id))

    async def send_signal(
        self, instance_id: str, signal_name: str, payload: bytes
    ) -> Status | None:
        return await self._arun(*send_signal(instance_id, signal_name, payload))

    async def acquire_task_slot(
        self,
        task_id: str,
        limit: int,
        instance_id: str,
        step_key: str,
        owner: str,
        attempt: int | None,
    ) -> bool:
        return await self._arun(
            *acquire_task_slot(task_id, limit, instance_id, step_key, owner, attempt)
        )

    async def release_task_slot(self, task_id: str, instance_id: str, step_key: str) -> None:
        return await self._arun(*release_task_slot(task_id, instance_id, step_key))

    async def take_rate_token(
        self,
        task_id: str,
        bucket: str,
        n: int,
        per: float,
        now: float,
        instance_id: str,
        step_key: str,
    ) -> float:
        return await self._arun(
            *take_rate_token(task_id, bucket, n, per, now, instance_id, step_key)
        )

    # -- end of generated code --

    async def aclose(self) -> None:
        await self._b.aclose()
