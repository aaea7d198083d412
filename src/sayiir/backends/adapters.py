"""Async views of synchronous storages, for ``CheckpointingRunner``.

A backend written once as synchronous code gets its async form here instead of
a second hand-kept copy: ``DirectAsyncStorage`` calls straight through (for
memory, where calls never block), ``ThreadedAsyncStorage`` runs each call in a
thread so a blocking backend (SQLite) never stalls the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from sayiir.backends.protocol import AsyncStorage, Storage
from sayiir.core.records import (
    AttemptRecord,
    ControlRequest,
    FinalState,
    InstanceRecord,
    RunState,
    Status,
    StepRecord,
)

__all__ = ["DirectAsyncStorage", "ThreadedAsyncStorage"]

P = ParamSpec("P")
R = TypeVar("R")


class DirectAsyncStorage(AsyncStorage):
    """Await-able facade over a non-blocking synchronous storage."""

    def __init__(self, storage: Storage) -> None:
        self._s = storage
        self.codec = storage.codec
        self.lease_secs = storage.lease_secs

    async def create_instance(
        self, record: InstanceRecord, *, replace: bool
    ) -> InstanceRecord | None:
        return await self._call(self._s.create_instance, record, replace=replace)

    async def load(self, instance_id: str) -> RunState | None:
        return await self._call(self._s.load, instance_id)

    async def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        return await self._call(self._s.take_over, instance_id, token, new_token)

    async def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        return await self._call(self._s.renew_lease, instance_id, token, release=release)

    async def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        return await self._call(self._s.save_steps, instance_id, steps, token=token)

    async def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        return await self._call(self._s.record_attempt, instance_id, attempt, token=token)

    async def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        return await self._call(self._s.consume_signal, instance_id, signal_name, key, token=token)

    async def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        return await self._call(self._s.finish, instance_id, final, steps, token=token)

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return await self._call(self._s.get_instance, instance_id)

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        return await self._call(self._s.get_checkpoint, instance_id, key)

    async def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        return await self._call(self._s.request_control, instance_id, request)

    async def unpause(self, instance_id: str) -> Status | None:
        return await self._call(self._s.unpause, instance_id)

    async def send_signal(
        self, instance_id: str, signal_name: str, payload: bytes
    ) -> Status | None:
        return await self._call(self._s.send_signal, instance_id, signal_name, payload)

    async def aclose(self) -> None:
        await self._call(self._s.close)

    async def _call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return fn(*args, **kwargs)


class ThreadedAsyncStorage(DirectAsyncStorage):
    """Await-able facade that runs each blocking call in a worker thread."""

    async def _call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)
