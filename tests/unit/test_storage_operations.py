"""One list of storage operations: every async form has exactly ``Storage``'s operations.

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
from sayiir.backends.protocol import AsyncStorage, QueueStorage, Storage

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE = {"async_storage", "close"}


def storage_operations() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(Storage).items()
        if inspect.isfunction(fn) and not name.startswith("_") and name not in LIFECYCLE
    }


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


@pytest.mark.parametrize(
    "cls", [AsyncStorage, DirectAsyncStorage, ThreadedAsyncStorage, AsyncPostgresStorage]
)
def test_async_forms_have_storages_operations_awaited(cls: type[Any]) -> None:
    assert async_operations(cls) == storage_operations()


def test_the_postgres_backend_passes_on_storages_operations_as_declared() -> None:
    # Generated too (the sync runner over the plans of postgres/_storage.py).
    ops = {name: inspect.signature(getattr(PostgresBackend, name)) for name in storage_operations()}
    assert ops == storage_operations()


def test_queue_storage_adds_to_storage_without_redefining() -> None:
    added = {n for n in vars(QueueStorage) if not n.startswith("_")}
    assert added.isdisjoint(storage_operations())


def test_the_generator_finds_a_stale_block(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_storage", ROOT / "scripts/gen_storage.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_storage"] = gen
    spec.loader.exec_module(gen)
    ops = gen.operations()
    assert [op.name for op in ops] == list(storage_operations())
    target = gen.TARGETS[1]  # DirectAsyncStorage
    source = (ROOT / target.path).read_text()
    # Regenerating what is there changes nothing (formatting aside, done by ruff) ...
    assert gen.generate(source, target, ops).count("async def ") == source.count("async def ")
    # ... and a new operation in Storage appears in every generated block.
    extra = gen.Operation("forget", "self, instance_id: str", "bool", ("instance_id",), ())
    regenerated = gen.generate(source, target, [*ops, extra])
    assert "return await self._call(self._s.forget, instance_id)" in regenerated
    # PostgreSQL passes each operation on to its plan: an operation without one is refused.
    pg = gen.TARGETS[2]
    assert pg.cls == "PostgresBackend"
    with pytest.raises(SystemExit, match=r"no plan function forget\(\)"):
        gen.generate((ROOT / pg.path).read_text(), pg, [*ops, extra])
