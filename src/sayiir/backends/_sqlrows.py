"""Records <-> rows of the SQL backends (SQLite and PostgreSQL), written once.

Both schemas name the columns of ``workflow_instances`` alike; what differs (the
execution's token and lease, the queue priority) each backend adds to what is here.
"""

from __future__ import annotations

from typing import Any

from sayiir.core.records import InstanceRecord, Status

__all__ = ["instance_params"]


def instance_params(record: InstanceRecord) -> dict[str, Any]:
    """The query parameters of ``record``'s ``workflow_instances`` row, by column name."""
    req = record.request
    return {
        "instance_id": record.instance_id,
        "workflow_id": record.workflow_id,
        "definition_hash": record.definition_hash,
        "status": Status(record.status).value,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "reason": record.reason,
        "cancelled_by": record.cancelled_by,
        "paused_by": record.paused_by,
        "wake_at": record.wake_at,
        "park_node": record.park_node,
        "signal_name": record.signal_name,
        "request_kind": None if req is None else req.kind,
        "request_reason": None if req is None else req.reason,
        "request_by": None if req is None else req.by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "completed_at": record.completed_at,
        "distributed": record.distributed,
        "traceparent": record.traceparent,
    }
