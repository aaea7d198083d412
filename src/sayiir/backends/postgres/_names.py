"""Table and index names, and the validation of the user's ``schema`` / ``table_prefix``.

Names reach SQL only through ``psycopg.sql.Identifier`` (see ``_sql``). They are still
validated up front, for two reasons: a clear error at construction beats a confusing one at
first use, and PostgreSQL silently truncates identifiers longer than 63 bytes, which would
make two long prefixes share tables.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "BARE_NAMES",
    "FUNCTIONS",
    "MAX_IDENTIFIER",
    "MAX_PREFIX",
    "TABLES",
    "changes_channel",
    "check_names",
    "migration_lock_key",
    "queue_channel",
]

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1

# Placeholder -> table name without prefix ({t_*} placeholders are schema-qualified).
TABLES: dict[str, str] = {
    "t_instances": "workflow_instances",
    "t_task_executions": "task_executions",
    "t_checkpoints": "checkpoints",
    "t_signals": "workflow_signals",
    "t_task_queue": "task_queue",
    "t_schedules": "schedules",
    "t_concurrency_slots": "concurrency_slots",
    "t_dedupe_keys": "dedupe_keys",
    "t_task_slots": "task_slots",
    "t_rate_windows": "rate_windows",
    "t_task_waits": "task_waits",
    "t_migrations": "schema_migrations",
    "t_definitions": "workflow_definitions",
    "t_audit": "audit_log",
}

# Placeholder -> index/constraint name without prefix ({n_*} placeholders are bare names).
BARE_NAMES: dict[str, str] = {
    "n_instances_pkey": "workflow_instances_pkey",
    "n_instances_status_check": "workflow_instances_status_check",
    "n_instances_request_check": "workflow_instances_request_check",
    "n_instances_workflow_idx": "workflow_instances_workflow_idx",
    "n_instances_status_idx": "workflow_instances_status_idx",
    "n_instances_created_idx": "workflow_instances_created_idx",
    "n_instances_completed_idx": "workflow_instances_completed_idx",
    "n_instances_wake_idx": "workflow_instances_wake_idx",
    "n_task_executions_pkey": "task_executions_pkey",
    "n_task_executions_attempt_key": "task_executions_attempt_key",
    "n_task_executions_instance_fkey": "task_executions_instance_fkey",
    "n_task_executions_status_check": "task_executions_status_check",
    "n_task_executions_task_idx": "task_executions_task_idx",
    "n_task_executions_finished_idx": "task_executions_finished_idx",
    "n_checkpoints_pkey": "checkpoints_pkey",
    "n_checkpoints_instance_fkey": "checkpoints_instance_fkey",
    "n_signals_pkey": "workflow_signals_pkey",
    "n_signals_send_key": "workflow_signals_send_key",
    "n_signals_pending_idx": "workflow_signals_pending_idx",
    "n_signals_instance_idx": "workflow_signals_instance_idx",
    "n_task_queue_pkey": "task_queue_pkey",
    "n_task_queue_instance_fkey": "task_queue_instance_fkey",
    "n_task_queue_lease_check": "task_queue_lease_check",
    "n_task_queue_ready_idx": "task_queue_ready_idx",
    "n_task_queue_lease_idx": "task_queue_lease_idx",
    "n_migrations_pkey": "schema_migrations_pkey",
    "n_instances_wf_status_idx": "workflow_instances_wf_status_idx",
    "n_instances_id_prefix_idx": "workflow_instances_id_prefix_idx",
    "n_definitions_pkey": "workflow_definitions_pkey",
    "n_audit_pkey": "audit_log_pkey",
    "n_audit_instance_idx": "audit_log_instance_idx",
    "n_instances_insert_notify": "workflow_instances_insert_notify",
    "n_instances_status_notify": "workflow_instances_status_notify",
    "n_schedules_pkey": "schedules_pkey",
    "n_schedules_due_idx": "schedules_due_idx",
    "n_concurrency_slots_pkey": "concurrency_slots_pkey",
    "n_concurrency_slots_instance_fkey": "concurrency_slots_instance_fkey",
    "n_concurrency_slots_instance_idx": "concurrency_slots_instance_idx",
    "n_dedupe_keys_pkey": "dedupe_keys_pkey",
    "n_dedupe_keys_expires_idx": "dedupe_keys_expires_idx",
    "n_instances_unique_id": "workflow_instances_unique_id",
    "n_task_slots_pkey": "task_slots_pkey",
    "n_task_slots_instance_idx": "task_slots_instance_idx",
    "n_rate_windows_pkey": "rate_windows_pkey",
    "n_task_waits_pkey": "task_waits_pkey",
}

# Placeholder -> function name without prefix ({f_*} placeholders are schema-qualified).
FUNCTIONS: dict[str, str] = {
    "f_notify_changes": "notify_changes",
    "f_unique_run_id": "unique_run_id",
    "f_partition_add": "partition_add",
    "f_partition_ensure": "partition_ensure",
    "f_partition_columns": "partition_columns",
    "f_partition_convert": "partition_convert",
    "f_partition_drop": "partition_drop",
}

# Names PostgreSQL derives itself (bigserial sequences) must fit too.
_IMPLICIT = ("task_executions_id_seq", "workflow_signals_id_seq", "audit_log_id_seq")

_LONGEST = max(len(n) for n in (*TABLES.values(), *BARE_NAMES.values(), *_IMPLICIT))
MAX_PREFIX = MAX_IDENTIFIER - _LONGEST

_IDENT = re.compile(r"[a-z_][a-z0-9_]*")


def check_names(schema: str, table_prefix: str) -> None:
    """Raise ``ValueError`` unless both names are plain lowercase identifiers that fit.

    >>> check_names("sayiir", "wf_")
    >>> check_names('x"; DROP TABLE canary; --', "wf_")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: schema='x"; DROP TABLE canary; --' is not allowed: ...
    """
    for what, value, limit in (
        ("schema", schema, MAX_IDENTIFIER),
        ("table_prefix", table_prefix, MAX_PREFIX),
    ):
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str, not {type(value).__name__}")
        if not _IDENT.fullmatch(value):
            raise ValueError(
                f"{what}={value!r} is not allowed: use lowercase letters, digits and _ "
                "(matching [a-z_][a-z0-9_]*), e.g. "
                + ('schema="sayiir"' if what == "schema" else 'table_prefix="sayiir_"')
            )
        if len(value) > limit:
            raise ValueError(
                f"{what}={value!r} is too long: at most {limit} characters, so that every "
                f"table and index name fits PostgreSQL's {MAX_IDENTIFIER}-byte identifier limit"
            )
    if schema.startswith("pg_"):
        raise ValueError(f"schema={schema!r} is not allowed: names starting with pg_ are reserved")


def migration_lock_key(schema: str, table_prefix: str) -> str:
    """The advisory-lock key text: migrators of other schemas/prefixes never wait on us."""
    return f"sayiir:migrate:{schema}:{table_prefix}"


def queue_channel(schema: str, table_prefix: str) -> str:
    """The LISTEN/NOTIFY channel of one schema + prefix: ``"<schema>.<prefix>queue"``.

    Names are ``[a-z0-9_]``, so the dot keeps every pair distinct. A pair too long for a
    63-byte channel name gets a digest of it instead (still distinct, still deterministic).

    >>> queue_channel("public", "sayiir_")
    'public.sayiir_queue'
    """
    return _channel(schema, table_prefix, "queue")


def changes_channel(schema: str, table_prefix: str) -> str:
    """The channel on which every new run and every change of a run's status is announced
    (its instance id as the payload), for live views: ``"<schema>.<prefix>changes"``.

    >>> changes_channel("public", "sayiir_")
    'public.sayiir_changes'
    """
    return _channel(schema, table_prefix, "changes")


def _channel(schema: str, table_prefix: str, kind: str) -> str:
    name = f"{schema}.{table_prefix}{kind}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    return f"sayiir_{kind}_" + hashlib.sha256(name.encode()).hexdigest()[:40]
