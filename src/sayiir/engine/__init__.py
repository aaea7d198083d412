"""The engine: one interpreter of the workflow tree, driven synchronously or with asyncio.

This package exports what the layers above it (``sayiir.distributed``) may use; its
modules are its own (an import-linter contract in ``pyproject.toml`` keeps it so).
"""

from __future__ import annotations

from sayiir.engine._drive import drive
from sayiir.engine._gate import check_storage
from sayiir.engine._interpreter import WorkerMode
from sayiir.engine._observe import log_extra, observer
from sayiir.engine._runs import (
    cancel_run,
    check_instance_id,
    check_policy,
    first_priority,
    instance_status,
    new_token,
    submit_run,
    task_result,
    work_claim,
)
from sayiir.engine.engines import Controls, backend_storage, resolve

__all__ = [
    "Controls",
    "WorkerMode",
    "backend_storage",
    "cancel_run",
    "check_instance_id",
    "check_policy",
    "check_storage",
    "drive",
    "first_priority",
    "instance_status",
    "log_extra",
    "new_token",
    "observer",
    "resolve",
    "submit_run",
    "task_result",
    "work_claim",
]
