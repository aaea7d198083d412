"""``TaskContextFilter``: the run, task and attempt ids (and trace ids) on log records.

sayiir's own records carry these attributes already (``extra=``); add the filter to a handler
and the records of your task code get them too, so one format string serves both.
"""

from __future__ import annotations

import logging

from sayiir.core.context import get_task_context
from sayiir.engine import _observe

__all__ = ["FIELDS", "TaskContextFilter"]

FIELDS = (
    "sayiir_workflow_id",
    "sayiir_instance_id",
    "sayiir_task_id",
    "sayiir_attempt",
    "sayiir_trace_id",
    "sayiir_span_id",
)


class TaskContextFilter(logging.Filter):
    """Add ``sayiir_workflow_id``, ``sayiir_instance_id``, ``sayiir_task_id``,
    ``sayiir_attempt`` (from ``get_task_context()``) and, while tracing is on,
    ``sayiir_trace_id`` and ``sayiir_span_id`` to every record it sees; attributes a record
    has already (sayiir's own ``extra=``) are kept. Outside a task the ids are ``None``,
    so a format string that names them never fails.

    >>> import logging, sys
    >>> handler = logging.StreamHandler(sys.stdout)
    >>> handler.addFilter(TaskContextFilter())
    >>> handler.setFormatter(logging.Formatter("%(sayiir_instance_id)s %(message)s"))
    >>> log = logging.getLogger("doctest.shop")
    >>> log.addHandler(handler); log.propagate = False
    >>> log.warning("outside any task")
    None outside any task
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = get_task_context()
        values: dict[str, object] = {}
        if ctx is not None:
            values = {
                "sayiir_workflow_id": ctx.workflow_id,
                "sayiir_instance_id": ctx.instance_id,
                "sayiir_task_id": ctx.task_id,
                "sayiir_attempt": ctx.attempt,
            }
        obs = _observe.OBSERVER
        ids = None if obs is None else obs.trace_ids()
        if ids is not None:
            values["sayiir_trace_id"], values["sayiir_span_id"] = ids
        fields = record.__dict__
        for name in FIELDS:
            if fields.get(name) is None:
                fields[name] = values.get(name)
        return True
