"""Reference module path of ``WorkflowClient`` (``from sayiir.workflow_client import ...``)."""

from __future__ import annotations

from sayiir.distributed.client import WorkflowClient

__all__ = ["WorkflowClient"]
