"""PostgreSQL backend pieces that need no server: names, URLs, SQL files, sans-IO ops, retries.

The operations are generators (``_ops``, ``_migrations``), so their logic is checked here by
feeding them rows, the way the executors in ``_io`` do.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any
from uuid import uuid4

import pytest

from sayiir.backends.postgres import PostgresBackend, _migrations, _ops, _queue
from sayiir.backends.postgres._conninfo import parse_target, redact
from sayiir.backends.postgres._names import (
    BARE_NAMES,
    MAX_PREFIX,
    TABLES,
    check_names,
    queue_channel,
)
from sayiir.core.records import (
    Claim,
    ControlRequest,
    FinalState,
    QueueItem,
    Status,
    StepRecord,
    control_decision,
)
from sayiir.errors import BackendError, InstanceNotFoundError, LeaseLostError, RunReplacedError

SECRET = "S3cretPw"


def drive(op: _ops.Op[Any], *replies: _ops.Rows) -> tuple[list[Any], Any]:
    """Run ``op`` with canned replies; return (requests, result)."""
    requests: list[Any] = []
    it = iter(replies)
    reply: Any = None
    while True:
        try:
            req = op.send(reply)
        except StopIteration as stop:
            return requests, stop.value
        requests.append(req)
        reply = next(it)


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema, prefix",
    [
        ('we"ird%1', "sayiir_"),
        ('x"; DROP TABLE canary; --', "sayiir_"),
        ("public", 'we"ird%1'),
        ("public", 'x"; DROP TABLE canary; --'),
        ("a b", "sayiir_"),
        ("Public", "sayiir_"),
        ("public", "Sayiir_"),
        ("public", ""),
        ("", "sayiir_"),
        ("1abc", "sayiir_"),
        ("sch\u00e9ma", "sayiir_"),
        ("public", "pr\u00e9fixe_"),
        ("public", "x" * (MAX_PREFIX + 1)),
        ("s" * 64, "sayiir_"),
        ("pg_catalog", "sayiir_"),
    ],
)
def test_bad_schema_or_prefix_is_rejected_up_front(schema: str, prefix: str) -> None:
    with pytest.raises(ValueError, match=r"schema|table_prefix"):
        check_names(schema, prefix)
    with pytest.raises(ValueError):  # before any parsing or network
        PostgresBackend("postgresql://nohost.invalid/x", schema=schema, table_prefix=prefix)


def test_longest_allowed_prefix_fits_every_identifier() -> None:
    check_names("s" * 63, "p" * MAX_PREFIX)
    for name in (*TABLES.values(), *BARE_NAMES.values()):
        assert len("p" * MAX_PREFIX + name) <= 63


def test_constructor_does_not_touch_the_network() -> None:
    backend = PostgresBackend("postgresql://app:pw@nohost.invalid:5432/sayiir")
    assert "nohost.invalid" in repr(backend)
    backend.close()


# -- URLs and redaction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, display",
    [
        (
            f"postgresql://app:{SECRET}@db.example.com:5432/sayiir",
            "postgresql://app:***@db.example.com:5432/sayiir",
        ),
        (f"postgres://app:{SECRET}@db/sayiir", "postgres://app:***@db/sayiir"),
        (
            f"postgresql://app@db/sayiir?password={SECRET}&sslmode=require",
            "postgresql://app@db/sayiir?password=***&sslmode=require",
        ),
        ("postgresql://localhost/sayiir", "postgresql://localhost/sayiir"),
        (f"host=db user=app password={SECRET} dbname=x", "host=db user=app password=*** dbname=x"),
    ],
)
def test_display_hides_the_password(url: str, display: str) -> None:
    target = parse_target(url)
    assert target.display == display
    assert SECRET not in repr(target)
    backend = PostgresBackend(url)
    assert SECRET not in repr(backend)
    assert "***" in repr(backend) or ("password" not in url and ":" + SECRET not in url)


def test_where_names_host_port_and_database() -> None:
    assert parse_target("postgresql://u:p@db.example.com:6543/wf").where == "db.example.com:6543/wf"
    assert parse_target("postgresql://localhost/sayiir").where == "localhost:5432/sayiir"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}%zz@127.0.0.1/db",  # libpq echoes the token
        f"postgresql://u:{SECRET}@x@127.0.0.1/db",  # '@' in the password
        f"postgresql://u:{SECRET}@127.0.0.1/db?nosuch=1",
        f"host=127.0.0.1 password='{SECRET}",  # unterminated quote
        f"host=127.0.0.1 password={SECRET[:4]} {SECRET[4:]} dbname=a",  # unquoted space
    ],
)
def test_unparsable_url_error_never_shows_the_password(url: str) -> None:
    with pytest.raises(BackendError) as info:
        PostgresBackend(url)
    exc = info.value
    for text in (str(exc), repr(exc)):
        assert SECRET not in text
        assert SECRET[4:] not in text
    assert exc.__cause__ is None and exc.__context__ is None


def test_redact_scrubs_urls_and_keywords() -> None:
    text = f"postgresql://a:{SECRET}@h/d password={SECRET} and {SECRET}"
    out = redact(text, (SECRET,))
    assert SECRET not in out
    assert out.count("***") == 3


# Strings that are not libpq URLs, or carry a bad option value: each fails at construction
# (no network), with a clear reason, and the password never shows.
MALFORMED = [
    (f"postgresql+psycopg://app:{SECRET}@db/x", "drop the driver suffix"),
    (f"POSTGRESQL://app:{SECRET}@db/x", "lower case"),
    (f"Postgres://app:{SECRET}@db/x?sslpassword={SECRET}", "lower case"),
    (f"postgressql://app:{SECRET}@db/x", "unknown scheme 'postgressql'"),
    (f"mysql://app:{SECRET}@db/x", "unknown scheme 'mysql'"),
    (f"postgresql:/app:{SECRET}@db/x", "two slashes"),
    (f"postgresql:app:{SECRET}@db/x", "two slashes"),
    (f"postgresql://app:{SECRET}@db:notaport/x", "port must be a number"),
    (f"postgresql://app:{SECRET}@db:99999/x", "port must be a number"),
    (f"postgresql://app:{SECRET}@db/x?sslmode=requir", "sslmode must be one of"),
    (f"postgresql://app:{SECRET}@db/x?connect_timeout=10s", "connect_timeout must be an integer"),
    (f"host=db password={SECRET} target_session_attrs=rw", "target_session_attrs must be one of"),
]


@pytest.mark.parametrize("url, reason", MALFORMED)
def test_a_malformed_url_fails_at_construction_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(BackendError) as info:
        PostgresBackend(url)  # the host "db" does not exist: nothing is contacted
    exc = info.value
    assert reason in str(exc)
    for text in (str(exc), repr(exc)):
        assert SECRET not in text
    assert "***" in str(exc)  # the string is shown, with its secret masked
    assert exc.__cause__ is None and exc.__context__ is None


@pytest.mark.parametrize(
    "url, display",
    [
        (
            f"postgresql://app@db/x?sslpassword={SECRET}&sslmode=require",
            "postgresql://app@db/x?sslpassword=***&sslmode=require",
        ),
        (
            f"postgresql://app:{SECRET}@db/x?sslkey=/k.pem&sslpassword={SECRET}x",
            "postgresql://app:***@db/x?sslkey=/k.pem&sslpassword=***",
        ),
        (f"host=db sslpassword={SECRET} dbname=x", "host=db sslpassword=*** dbname=x"),
        (f"host=db sslpassword = '{SECRET} 2' dbname=x", "host=db sslpassword = *** dbname=x"),
    ],
)
def test_every_password_parameter_is_hidden(url: str, display: str) -> None:
    target = parse_target(url)
    assert target.display == display
    backend = PostgresBackend(url)
    assert SECRET not in repr(backend) and SECRET not in str(backend)
    assert SECRET not in repr(target)


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql+psycopg://app:{SECRET}@db/x",
        f"POSTGRESQL://app:{SECRET}@db/x",
        f"postgressql://app:{SECRET}@db/x",
        f"postgresql:/app:{SECRET}@db/x",
        f"redis://:{SECRET}@cache:6379/0",
        f"see postgres://app:p@{SECRET}@db/x for details",
        f"postgresql://app@db/x?sslmode=require&sslpassword={SECRET}",
        f"host=db PASSWORD={SECRET}",
        f"host=db sslpassword='{SECRET}' user=app",
    ],
)
def test_redact_hides_every_url_password_and_password_parameter(text: str) -> None:
    out = redact(text)
    assert SECRET not in out
    assert "***" in out


def test_redact_leaves_ordinary_text_alone() -> None:
    text = (
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        'FATAL:  password authentication failed for user "app" at 12:30:45'
    )
    assert redact(text) == text
    url = "postgresql://app@db.example.com:5432/sayiir?sslmode=require"
    assert redact(url) == url


def test_password_option_is_checked_and_never_called_at_construction() -> None:
    calls: list[int] = []

    def password() -> str:
        calls.append(1)
        return SECRET

    backend = PostgresBackend("postgresql://app@nohost.invalid/x", password=password)
    assert calls == [] and SECRET not in repr(backend)
    backend.close()
    with pytest.raises(ValueError, match="keep one of them"):
        PostgresBackend(f"postgresql://app:{SECRET}@db/x", password=password)
    with pytest.raises(TypeError, match="password must be a str or a function"):
        PostgresBackend("postgresql://app@db/x", password=b"bytes")  # type: ignore[arg-type]


# -- SQL files ---------------------------------------------------------------------------------


def test_queries_and_migrations_compile_for_odd_but_valid_names() -> None:
    from sayiir.backends.postgres._sql import compile_sql

    compiled = compile_sql("s_1", "x9_")
    assert b'"s_1"."x9_workflow_instances"' in compiled.queries["save_steps"]
    assert set(compiled.scripts) == {m.version for m in _migrations_list()}
    for text in (*compiled.queries.values(), *compiled.scripts.values()):
        assert b"{" not in text, "an unfilled placeholder"


def _migrations_list() -> list[Any]:
    from sayiir.backends.postgres._sql import migrations

    return migrations()


def test_status_check_constraint_matches_the_enum() -> None:
    from importlib import resources

    package = resources.files("sayiir.backends.postgres")
    for name in ("schema.sql", "migrations/0001_initial.sql"):
        text = package.joinpath(name).read_text()
        match = re.search(r"status_check\} CHECK \(status IN \(([^)]*)\)", text)
        assert match, name
        assert set(re.findall(r"'([a-z_]+)'", match.group(1))) == {s.value for s in Status}


# -- sans-IO operations ------------------------------------------------------------------------


def test_save_steps_is_one_request_with_parallel_arrays() -> None:
    steps = [StepRecord("a", b"1", "t", 1, 1.0, 2.0, "w"), StepRecord("a", b"2", "t", 2, 3.0, 4.0)]
    touched = ("running", None, None, None, "pause", "r", "u")
    requests, result = drive(_ops.save_steps("i", steps), [touched])
    assert [r.name for r in requests] == ["save_steps"]
    params = requests[0].params
    assert params["keys"] == ["a"] and params["outputs"] == [b"2"]  # the last write of a key wins
    assert result == ControlRequest("pause", "r", "u")


def test_one_step_is_bound_as_plain_parameters_and_none_as_no_parameters() -> None:
    """The common single step skips array binding (its client CPU cost more than the
    statement's server time); every variant exists for every query that writes steps."""
    touched = ("running", None, None, None, None, None, None)
    one = [StepRecord("a", b"1", "t", 2, 1.0, 2.0, "w")]
    (req,), _ = drive(_ops.save_steps("i", one), [touched])
    assert req.name == "save_steps/1"
    assert (req.params["s_key"], req.params["s_output"], req.params["s_attempt"]) == ("a", b"1", 2)
    assert "keys" not in req.params
    (req,), _ = drive(_ops.finish("i", FinalState(Status.FAILED, error="x"), []), [(1,)])
    assert req.name == "finish/0" and "keys" not in req.params and "s_key" not in req.params
    from sayiir.backends.postgres._sql import compile_sql

    queries = compile_sql("public", "sayiir_").queries
    for name in ("save_steps", "finish", "advance", "advance_final"):
        for suffix in ("", "/1", "/0"):
            assert b"{" not in queries[name + suffix], name + suffix
    for name in ("advance/1/q0", "advance_final/q0", "enqueue/q0"):
        assert b"unnest(%(q_keys)s" not in queries[name] and b"LIMIT 0" in queries[name]
    assert "load/1" not in queries and "finish/q0" not in queries  # only where a switch is used


def test_touch_result_obeys_an_applied_cancel_first() -> None:
    row = ("cancelled", "stop", "ops", None, "pause", "r", "u")
    _, result = drive(_ops.save_steps("i", []), [row])
    assert result == ControlRequest("cancel", "stop", "ops")


def test_writes_to_a_missing_instance_raise() -> None:
    with pytest.raises(InstanceNotFoundError):
        drive(_ops.save_steps("gone", []), [], [])


def test_a_write_that_matches_no_run_of_its_token_is_refused() -> None:
    """No row changed, but the instance exists: another run (terminate_existing) owns it."""
    token = "0b7e5d2c-6f7e-4a39-9d57-3c1c2a9f0e11"
    other = "5d0c9a3e-1f2b-4c6d-8e9f-0a1b2c3d4e5f"
    row = (
        "i",
        "wf",
        "h",
        "running",
        b"1",
        *([None] * 11),
        0.0,
        0.0,
        None,
        False,
        other,
        None,
        None,
    )
    with pytest.raises(RunReplacedError):
        drive(_ops.finish("i", FinalState(Status.COMPLETED), [], token), [(0,)], [row])
    requests, _ = drive(_ops.save_steps("i", [], token), [("running", *([None] * 6))])
    assert str(requests[0].params["token"]) == token


@pytest.mark.parametrize("kind", ["cancel", "pause"])
def test_request_control_passes_control_decision_for_every_status(kind: str) -> None:
    requests, found = drive(_ops.request_control("i", ControlRequest(kind)), [("waiting",)])
    params = requests[0].params
    for status in Status:
        decision = control_decision(status, kind)
        assert (status.value in params["apply"]) == (decision == "apply")
        assert (status.value in params["request"]) == (decision == "request")
    assert found is Status.WAITING


def test_create_instance_recognises_its_own_commit_on_retry() -> None:
    from uuid import uuid4

    from sayiir.core.records import InstanceRecord

    token = uuid4()
    rec = InstanceRecord("i", "wf", "h", Status.RUNNING, b"1")
    existing = (False, "i", "wf", "h", "running", b"1", *([None] * 11), 0.0, 0.0, None, False)
    _, result = drive(
        _ops.create_instance(rec, replace=False, token=token, retry=True),
        [(*existing, token, None, None)],
    )
    assert result is None
    _, result = drive(
        _ops.create_instance(rec, replace=False, token=token, retry=False),
        [(*existing, token, None, None)],
    )
    assert result is not None and result.instance_id == "i"


def test_create_instance_reads_again_when_a_concurrent_insert_is_invisible() -> None:
    from uuid import uuid4

    from sayiir.core.records import InstanceRecord

    rec = InstanceRecord("i", "wf", "h", Status.RUNNING, b"1")
    invisible = (False, *([None] * 23))
    existing = (False, "i", "wf", "h", "running", b"1", *([None] * 11), 0.0, 0.0, None, False,
                None, None, None)  # fmt: skip
    requests, result = drive(
        _ops.create_instance(rec, replace=False, token=uuid4(), retry=False),
        [invisible],
        [existing],
    )
    assert len(requests) == 2
    assert result is not None


def test_old_server_is_refused_with_both_versions() -> None:
    op = _migrations.inspect("public", "sayiir_", _migrations_list(), "db:5432/x")
    with pytest.raises(BackendError, match=r"13 or later.*runs 12\.5"):
        drive(op, [(120005, "u", "x")])


def test_server_version_texts() -> None:
    assert _migrations._server_version_text(90624) == "9.6.24"
    assert _migrations._server_version_text(150020) == "15.20"


# -- the worker queue (sans-IO) ----------------------------------------------------------------

CLAIM = Claim("i", "k", 2, "w", "h")
HELD = [(True, "running", None, None, None, None, None, None, "h", None, 0, True)]
LOST = [(False, None, None, None, None, None, None, None, None, None, 0, False)]


def advance(
    *,
    steps: list[StepRecord] | None = None,
    final: FinalState | None = None,
    enqueue: tuple[QueueItem, ...] | list[QueueItem] = (),
    next_item: QueueItem | None = None,
    release: bool = False,
    retry: bool = False,
    replies: list[_ops.Rows] | None = None,
) -> tuple[list[Any], Any]:
    op = _queue.advance(
        CLAIM, steps or [], final=final, enqueue=enqueue, next_item=next_item,
        release=release, lease_secs=30.0, token=uuid4(), retry=retry,
    )  # fmt: skip
    return drive(op, *(replies or [HELD]))


def test_queue_channel_is_per_schema_and_prefix_and_fits_a_name() -> None:
    assert queue_channel("public", "sayiir_") == "public.sayiir_queue"
    assert queue_channel("a_b", "c_") != queue_channel("a", "b_c_")
    long = queue_channel("s" * 63, "p" * MAX_PREFIX)
    assert len(long) <= 63 and long != queue_channel("s" * 63, "q" * MAX_PREFIX)


def test_advance_keeps_the_claim_and_never_queues_its_own_key_then() -> None:
    (req,), result = advance(enqueue=[QueueItem("k"), QueueItem("x")])
    assert req.name == "advance/0" and req.params["fate"] == "keep"  # items: arrays
    assert req.params["q_keys"] == ["k", "x"]  # the SQL skips %(key)s while the claim is kept
    assert result == (None, CLAIM)


def test_advance_decides_the_fate_of_the_claim() -> None:
    fates = {
        "release": advance(release=True),
        "requeue": advance(release=True, enqueue=[QueueItem("k", available_at=9.0)]),
        "renew": advance(next_item=QueueItem("k")),
        "move": advance(next_item=QueueItem("n")),
        "move, but queued here": advance(next_item=QueueItem("n"), enqueue=[QueueItem("n")]),
        "move, but checkpointed here": advance(next_item=QueueItem("n"), steps=[StepRecord("n", b"1")]),  # noqa: E501
        "move, queued later here": advance(next_item=QueueItem("n"), enqueue=[QueueItem("n", available_at=9.0)]),  # noqa: E501
    }  # fmt: skip
    got = {
        name: (r[0].params["fate"], r[0].params["move"], r[0].params["n_due"])
        for name, (r, _) in fates.items()
    }
    assert got == {
        "release": ("drop", False, False),
        "requeue": ("requeue", False, False),
        "renew": ("renew", False, False),
        "move": ("move", True, False),  # the claimed entry is dropped only if it moved
        "move, but queued here": ("move", True, True),  # taken at once, not queued
        "move, but checkpointed here": ("keep", False, False),
        "move, queued later here": ("keep", False, False),
    }
    assert fates["move, but queued here"][0][0].name.endswith("/q0")  # nothing left to queue


def test_a_terminal_final_queues_nothing_and_drops_everything() -> None:
    done = FinalState(Status.COMPLETED, output=b"1")
    requests, result = advance(
        final=done, enqueue=[QueueItem("x")], next_item=QueueItem("n"),
        replies=[[], [], [(True, 0, True)], []],
    )  # fmt: skip
    names = [r.name for r in requests]
    assert names == ["begin", "lock_instance", "advance_final/0/q0", "commit"]  # lock first
    req = requests[2]
    assert (req.params["terminal"], req.params["move"]) == (True, False)
    assert "q_keys" not in req.params
    assert result == (None, None)


def test_a_final_that_meets_an_applied_pause_keeps_it() -> None:
    """The held claim is given up, the final state not written: the stored pause is returned."""
    paused = ("i", "wf", "h", "paused", b"1", None, None, "hold", None, "ops", *([None] * 6),
              0.0, 0.0, None, True, None, None, None)  # fmt: skip
    done = FinalState(Status.COMPLETED, output=b"1")
    requests, result = advance(final=done, replies=[[], [], [(True, 0, False)], [], [paused]])
    assert [r.name for r in requests][-1] == "get_instance"
    assert result == (ControlRequest("pause", "hold", "ops"), None)


def test_a_move_on_a_stale_snapshot_is_made_again_after_locking_the_run() -> None:
    stale = [(*HELD[0][:-1], False)]  # held, not moved, the snapshot missed a write of the run
    moved = [(*HELD[0][:-3], 1, 0, True)]
    reqs, result = advance(
        steps=[StepRecord("k", b"1")], next_item=QueueItem("n"), replies=[stale, [], [], moved, []]
    )
    assert [r.name for r in reqs] == ["advance/1/q0", "begin", "lock_instance", "advance/0/q0",
                                      "commit"]  # fmt: skip
    assert result == (None, Claim("i", "n", 1, "w", "h"))
    kept, result = advance(next_item=QueueItem("n"), replies=[stale, [], [], HELD, []])
    assert len(kept) == 5 and result == (None, CLAIM)  # not free after all: the claim is kept
    fresh = [(*HELD[0][:-1], True)]
    reqs, result = advance(next_item=QueueItem("n"), replies=[fresh])
    assert len(reqs) == 1 and result == (None, CLAIM)  # refused on a current snapshot: final


def test_a_lost_claim_raises_unless_a_retry_finds_its_own_commit() -> None:
    with pytest.raises(LeaseLostError, match="lost its claim on task 'k'"):
        advance(release=True, replies=[LOST])
    with pytest.raises(LeaseLostError):  # kept claims are never "recovered"
        advance(retry=True, replies=[LOST])
    obeyed = ("running", None, None, None, None, None, None)
    recover = [(*obeyed, "h", None, False)]
    reqs, result = advance(release=True, retry=True, replies=[LOST, recover])
    assert [r.name for r in reqs] == ["advance/0/q0", "advance_recover"] and result == (None, None)
    moved = [(*obeyed, "h", 1, False)]
    _, result = advance(next_item=QueueItem("n"), retry=True, replies=[LOST, moved])
    assert result == (None, Claim("i", "n", 1, "w", "h"))
    taken = [(*obeyed, "h", None, True)]
    with pytest.raises(LeaseLostError):
        advance(release=True, retry=True, replies=[LOST, taken])


def test_heartbeat_returns_the_claims_not_extended() -> None:
    other = Claim("j", "k", 1, "w", "h")
    _, lost = drive(_queue.heartbeat([CLAIM, other], 30.0), [("i", "k", 2, "w")])
    assert lost == [other]


# -- retry classification ----------------------------------------------------------------------


def test_transient_and_permanent_errors() -> None:
    import psycopg
    import psycopg_pool

    from sayiir.backends.postgres._errors import is_transient

    assert is_transient(psycopg_pool.PoolTimeout("timeout"))
    assert not is_transient(psycopg_pool.PoolClosed("closed"))
    assert is_transient(psycopg.OperationalError("consuming input failed: server closed"))
    assert is_transient(psycopg.errors.AdminShutdown("terminating connection"))
    assert is_transient(psycopg.errors.CannotConnectNow("starting up"))
    assert is_transient(psycopg.errors.SerializationFailure("retry"))
    assert not is_transient(
        psycopg.OperationalError('FATAL:  password authentication failed for user "x"')
    )
    assert not is_transient(
        psycopg.OperationalError("server does not support SSL, but SSL was required")
    )
    assert not is_transient(psycopg.errors.UndefinedTable("no table"))
    assert not is_transient(ValueError("not a database error"))


# -- row shapes agree with the SELECT lists ---------------------------------------------------


def select_list(text: str) -> list[str | None]:
    """The column names of a SELECT (or RETURNING) list: ``t.col`` and
    ``extract(epoch FROM t.col)::float8`` name ``col``; other expressions ``None``."""
    items, depth, start = [], 0, 0
    for at, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:at])
            start = at + 1
    items.append(text[start:])
    names: list[str | None] = []
    for item in (" ".join(i.split()) for i in items):
        found = re.fullmatch(r"(?:\w+\.)?(\w+)|extract\(epoch FROM \w+\.(\w+)\)::float8", item)
        names.append(None if found is None else found[1] or found[2])
    return names


def between(text: str, start: str, end: str) -> str:
    at = text.rindex(start) + len(start)
    return text[at : text.index(end, at)]


@pytest.mark.parametrize(
    ("shape", "query", "start", "end", "renamed"),
    [
        ("InstanceRow", "_instance_columns", "", "\n\n", {}),
        ("TouchedRow", "_touch", "RETURNING", ")", {}),
        ("LoadRow", "load", "{_instance_columns},", "\nFROM", {2: "keys"}),
        ("ClaimRow", "claim", "\n(SELECT", "\n FROM claimed", {}),
        ("ClaimRow", "claimed_by_token", "\nSELECT", "\nFROM", {}),
        ("HeldRow", "heartbeat", "RETURNING", "\n\n", {}),
        ("AdvanceRow", "advance", "SELECT EXISTS (SELECT FROM held),", "\nFROM (SELECT)", {}),
        ("RecoverRow", "advance_recover", "\nSELECT", "\nFROM {t_instances}", {}),
    ],
)
def test_row_shapes_name_the_columns_of_their_select_lists(
    shape: str, query: str, start: str, end: str, renamed: dict[int, str]
) -> None:
    """``_rows`` reads results by name; its shapes must list the SELECT's columns in order
    (an expression's column may be named anything)."""
    from sayiir.backends._sqlfiles import load_queries
    from sayiir.backends.postgres import _rows

    fields = list(getattr(_rows, shape)._fields)
    if shape == "AdvanceRow":
        fields = fields[1:]  # the first column, EXISTS (SELECT FROM held), is the start marker
    text = "\n" + load_queries("sayiir.backends.postgres")[query] + "\n\n"
    names = select_list(between(text, start, end) if start else text[: text.index(end, 1)])
    assert len(names) == len(fields), (names, fields)
    for at, (name, field) in enumerate(zip(names, fields, strict=True)):
        assert name is None or renamed.get(at, field) == name, (at, name, field)


# -- the retry loop (one generator for the sync and the async shell) -------------------------


def test_the_retry_loop_waits_checks_the_pool_once_then_gives_up() -> None:
    import psycopg

    from sayiir.backends.postgres._io import Retry
    from sayiir.backends.postgres._runner import START, Wait, attempts

    secret = "s3cr3t-pw"
    target = parse_target(f"postgresql://app:{secret}@db.example/x")
    retry = Retry(target, 0.5, "save_steps")
    plan = attempts(retry)
    assert next(plan) is START and retry.acquire_timeout(30.0) == 30.0
    lost = psycopg.OperationalError(f"server closed the connection ({secret})")
    first = plan.send(lost)
    assert (first.seconds, first.check_pool) == (0.0, True)  # a dead pooled connection
    assert retry.acquire_timeout(30.0) <= 0.5  # retries wait within the budget
    second = plan.send(lost)
    assert isinstance(second, Wait) and 0 < second.seconds <= 0.5 and not second.check_pool
    retry._started -= 1.0  # the budget is spent
    with pytest.raises(BackendError, match=r"kept failing for .*\(3 attempts") as info:
        plan.send(lost)
    error = info.value
    assert secret not in str(error) and error.__cause__ is None and error.__context__ is None


def test_the_retry_loop_gives_up_at_once_on_a_permanent_error() -> None:
    import psycopg

    from sayiir.backends.postgres._io import Retry
    from sayiir.backends.postgres._runner import attempts

    plan = attempts(Retry(parse_target("postgresql://db.example/x"), 30.0, "load"))
    next(plan)
    with pytest.raises(BackendError, match="during load"):
        plan.send(psycopg.errors.UndefinedTable("no table"))


# -- import hygiene ----------------------------------------------------------------------------


def test_importing_sayiir_and_the_package_does_not_import_psycopg() -> None:
    code = (
        "import sys, sayiir, sayiir.backends.postgres\n"
        "from sayiir import PostgresBackend\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "assert 'psycopg_pool' not in sys.modules, 'psycopg_pool imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
