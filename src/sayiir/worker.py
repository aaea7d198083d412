"""Reference module path of ``Worker`` and ``WorkerHandle`` (``from sayiir.worker import ...``)."""

from __future__ import annotations

from sayiir.distributed.worker import Worker, WorkerHandle

__all__ = ["Worker", "WorkerHandle"]
