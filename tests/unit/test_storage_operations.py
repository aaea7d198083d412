"""One list of storage operations: every async form has exactly ``Storage``'s operations (and
the task limits' ``TaskLimitStorage`` ones, where the backend has them).

``AsyncStorage`` and the pass-through classes are generated from ``Storage`` by
``scripts/gen_storage.py`` (``scripts/check`` fails when they are stale); this checks the
result the way the engine relies on it: same names, same parameters, same results.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

from sayiir.backends.adapters import DirectAsyncStorage, ThreadedAsyncStorage
from sayiir.backends.postgres import AsyncPostgresStorage, PostgresBackend
from sayiir.backends.protocol import (
    AsyncStorage,
    AsyncTaskLimitStorage,
    QueueStorage,
    Storage,
    TaskLimitStorage,
)

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE = {"async_storage", "close"}


def storage_operations(protocol: type[Any] = Storage) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(protocol).items()
        if inspect.isfunction(fn) and not name.startswith("_") and name not in LIFECYCLE
    }


def all_operations() -> dict[str, inspect.Signature]:
    return {**storage_operations(), **storage_operations(TaskLimitStorage)}


def async_operations(cls: type[Any]) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_") and name != "aclose"
    }


def test_storage_lists_the_operations_the_engine_uses() -> None:
    assert set(storage_operations()) == {
        "create_instance", "take_over", "renew_lease", "load", "save_steps", "record_attempt",
        "consume_signal", "finish", "get_instance", "get_checkpoint", "request_control",
        "unpause", "send_signal",
    }  # fmt: skip


def test_the_task_limits_have_a_protocol_of_their_own() -> None:
    assert set(storage_operations(TaskLimitStorage)) == {
        "acquire_task_slot", "release_task_slot", "take_rate_token",
    }  # fmt: skip
    assert async_operations(AsyncTaskLimitStorage) == storage_operations(TaskLimitStorage)


def test_async_storage_has_storages_operations_awaited() -> None:
    assert async_operations(AsyncStorage) == storage_operations()


@pytest.mark.parametrize("cls", [DirectAsyncStorage, ThreadedAsyncStorage, AsyncPostgresStorage])
def test_async_forms_have_every_operation_awaited(cls: type[Any]) -> None:
    assert async_operations(cls) == all_operations()


def test_the_postgres_backend_passes_on_every_operation_as_declared() -> None:
    # Generated too (the sync runner over the plans of postgres/_storage.py).
    ops = {name: inspect.signature(getattr(PostgresBackend, name)) for name in all_operations()}
    assert ops == all_operations()


def test_queue_storage_adds_to_storage_without_redefining() -> None:
    added = {n for n in vars(QueueStorage) if not n.startswith("_")}
    assert added.isdisjoint(storage_operations())


def test_the_generator_finds_a_stale_block(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_storage", ROOT / "scripts/gen_storage.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_storage"] = gen
    spec.loader.exec_module(gen)
    ops = gen.operations() + gen.operations(cls="TaskLimitStorage")
    assert [op.name for op in ops] == list(all_operations())
    target = gen.TARGETS[2]
    assert target.cls == "DirectAsyncStorage"
    source = (ROOT / target.path).read_text()
    # Regenerating what is there changes nothing (formatting aside, done by ruff) ...
    assert gen.generate(source, target, ops).count("async def ") == source.count("async def ")
    # ... and a new operation in Storage appears in every generated block.
    extra = gen.Operation("forget", "self, instance_id: str", "bool", ("instance_id",), ())
    regenerated = gen.generate(source, target, [*ops, extra])
    assert "return await self._call(self._s.forget, instance_id)" in regenerated
    # PostgreSQL passes each operation on to its plan: an operation without one is refused.
    pg = gen.TARGETS[3]
    assert pg.cls == "PostgresBackend"
    with pytest.raises(SystemExit, match=r"no plan function forget\(\)"):
        gen.generate((ROOT / pg.path).read_text(), pg, [*ops, extra])
