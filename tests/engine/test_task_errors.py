"""Nothing is left ``running``: whatever a task raises, and whatever fails while its outcome is
encoded or stored, ends in a stored ``failed`` status with a clear message (issue 10, item 3).

Every case runs on every backend, through the blocking engine and the asyncio runner, and
(where no custom codec is needed) on the in-memory path. A task's ``BaseException``
(``SystemExit``, ``KeyboardInterrupt``, its own ``CancelledError``) is a failed attempt, as in
the reference: retried per the policy, then the run fails; the process goes on. Real
processes for those: ``test_task_exits.py``. Worker threads: ``tests/distributed``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sayiir import (
    CheckpointingRunner,
    Flow,
    RetryPolicy,
    TaskError,
    WorkflowClient,
    run_durable_workflow,
    run_workflow,
    task,
)
from sayiir.core.codec import JsonCodec
from tests.engine.conftest import BACKENDS, close_backend, make_backend

# -- exceptions users write ---------------------------------------------------------------------


class Weird(Exception):
    """Its ``__str__`` raises: describing it must not."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class StrictError(ValueError):
    """Only takes a keyword-only argument: ``type(exc)(message)`` cannot rebuild it."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


class PickyError(TypeError):
    """Its ``__init__`` raises for anything but an int: rebuilding it with a text fails."""

    def __init__(self, value: Any) -> None:
        if not isinstance(value, int):
            raise RuntimeError("PickyError takes an int")
        super().__init__(value)


class PickyCodec:
    """JSON, except for a few task outputs that it refuses the way real codecs fail."""

    name = "picky-json"

    def __init__(self) -> None:
        self._json = JsonCodec()

    def encode(self, value: object) -> bytes:
        if value == "unicode-poison":
            raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")
        if value == "strict-poison":
            raise StrictError(code=7)
        if value == "picky-poison":
            raise PickyError(7)
        if value == "text-poison":
            return "not bytes"  # type: ignore[return-value]
        return self._json.encode(value)

    def decode(self, data: bytes) -> object:
        if b"decode-poison" in data:
            raise StrictError(code=9)  # a buggy codec: not even a DeserializationError
        return self._json.decode(data)


# -- the tasks ----------------------------------------------------------------------------------


def deep(x: int) -> Any:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    return value


def str_raises(x: int) -> int:
    raise Weird()


def exits(x: int) -> int:
    sys.exit(3)


def interrupted(x: int) -> int:
    raise KeyboardInterrupt


async def cancels_itself(x: int) -> int:
    raise asyncio.CancelledError


def nul_message(x: int) -> int:
    raise ValueError("a\x00b")


def surrogate_message(x: int) -> int:
    raise ValueError("bad \ud800 text")


def unicode_poison(x: int) -> str:
    return "unicode-poison"


def strict_poison(x: int) -> str:
    return "strict-poison"


def picky_poison(x: int) -> str:
    return "picky-poison"


def text_poison(x: int) -> str:
    return "text-poison"


def decode_poison(x: int) -> list[str]:
    return ["decode-poison"]


def _exact(text: str) -> Callable[[str], bool]:
    return lambda error: error == text


def _starts_ends(head: str, tail: str) -> Callable[[str], bool]:
    return lambda error: error.startswith(head) and error.endswith(tail)


# name -> (task, check of the error text, needs PickyCodec)
CASES: dict[str, tuple[Callable[[int], Any], Callable[[str], bool], bool]] = {
    "deep-output": (
        deep,
        _starts_ends("RecursionError: maximum recursion depth exceeded", "(output of task 'deep')"),
        False,
    ),
    "str-raises": (str_raises, _exact("Weird: <exception str() failed>"), False),
    "system-exit": (exits, _exact("SystemExit: 3"), False),
    "keyboard-interrupt": (interrupted, _exact("KeyboardInterrupt: "), False),
    "own-cancelled-error": (cancels_itself, _exact("CancelledError: "), False),
    "nul-in-message": (nul_message, _exact("ValueError: a\\x00b"), False),
    "surrogate-in-message": (surrogate_message, _exact("ValueError: bad \\ud800 text"), False),
    "codec-unicode-error": (
        unicode_poison,
        _starts_ends(
            "UnicodeEncodeError: 'utf-8' codec can't encode", "(output of task 'unicode_poison')"
        ),
        True,
    ),
    "codec-kw-only-exception": (
        strict_poison,
        _exact("StrictError: code 7 (output of task 'strict_poison')"),
        True,
    ),
    "codec-exception-init-raises": (
        picky_poison,
        _exact("PickyError: 7 (output of task 'picky_poison')"),
        True,
    ),
    "codec-cannot-decode-output": (
        decode_poison,
        _exact("StrictError: code 9 (output of task 'decode_poison')"),
        True,
    ),
    "codec-returns-text": (
        text_poison,
        _exact(
            "TypeError: codec 'picky-json' returned str from encode(), not bytes "
            "(output of task 'text_poison')"
        ),
        True,
    ),
}
PLAIN_CASES = [name for name, (_, _, codec) in CASES.items() if not codec]


def ok(x: int) -> int:
    return x + 1


def _workflow(name: str) -> Any:
    fn = CASES[name][0]
    return Flow(f"bad-{name}").then(ok).then(fn).build()


@pytest.fixture(params=BACKENDS)
def picky(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    b = make_backend(request.param, request, tmp_path, codec=PickyCodec())
    yield b
    close_backend(b)


def _assert_failed_and_stored(backend: Any, iid: str, status: Any, name: str) -> None:
    check = CASES[name][1]
    assert status.status == "failed", status
    assert check(status.error), status.error
    stored = WorkflowClient(backend).status(iid)
    assert stored.status == "failed" and stored.error == status.error
    # The engine goes on: the next run in this process completes.
    good = Flow("good").then(ok).build()
    assert run_durable_workflow(good, iid + "-next", 1, backend=backend).output == 2


@pytest.mark.parametrize("name", list(CASES))
def test_a_failing_task_or_output_fails_the_run(picky, iid, name):
    status = run_durable_workflow(_workflow(name), iid, 1, backend=picky)
    _assert_failed_and_stored(picky, iid, status, name)


@pytest.mark.parametrize("name", list(CASES))
def test_a_failing_task_or_output_fails_the_run_async(picky, iid, name):
    status = asyncio.run(CheckpointingRunner(picky).run(_workflow(name), iid, 1))
    _assert_failed_and_stored(picky, iid, status, name)


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_an_input_the_codec_cannot_read_back_fails_the_run(picky, iid, runner):
    wf = Flow("bad-input").then(ok).build()
    if runner == "sync":
        status = run_durable_workflow(wf, iid, ["decode-poison"], backend=picky)
    else:
        status = asyncio.run(CheckpointingRunner(picky).run(wf, iid, ["decode-poison"]))
    expected = (
        f"DeserializationError: input of instance '{iid}' cannot be decoded with codec "
        "'picky-json': code 9"
    )
    assert status.status == "failed" and status.error == expected
    stored = WorkflowClient(picky).status(iid)
    assert stored.status == "failed" and stored.error == expected


@pytest.mark.parametrize("name", PLAIN_CASES)
def test_a_failing_task_or_output_is_a_task_error_in_memory(name):
    with pytest.raises(TaskError) as info:
        run_workflow(_workflow(name), 1)
    head = str(info.value).split("\n\n", 1)[0]
    assert CASES[name][1](head), head


@pytest.mark.parametrize("name", ["system-exit", "keyboard-interrupt", "str-raises"])
def test_a_failing_task_in_a_fork_branch_fails_the_run(picky, iid, name):
    fn = CASES[name][0]
    wf = Flow(f"fork-{name}").fork().branch(ok).branch(fn).join(lambda d: d, name="j").build()
    status = run_durable_workflow(wf, iid, 1, backend=picky)
    _assert_failed_and_stored(picky, iid, status, name)


def test_system_exit_is_retried_like_any_failure(picky, iid):
    attempts: list[int] = []
    lock = threading.Lock()

    @task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def leaves(x: int) -> int:
        with lock:
            attempts.append(x)
        if len(attempts) < 3:
            sys.exit(len(attempts))
        return x * 10

    status = run_durable_workflow(Flow("exit-retry").then(leaves).build(), iid, 1, backend=picky)
    assert status.status == "completed" and status.output == 10
    assert len(attempts) == 3


# -- the traceback in a TaskError: the user's frames only (issue 10, item 8) ----------------------


def helper_raise(x: int) -> int:
    raise ValueError(f"boom {x}")


def sync_task(x: int) -> int:
    return helper_raise(x)


async def async_task(x: int) -> int:
    await asyncio.sleep(0)
    return helper_raise(x)


@task(timeout="60s")
def timed_task(x: int) -> int:
    return helper_raise(x)


@task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.0))
def retried_task(x: int) -> int:
    return helper_raise(x)


def chained_task(x: int) -> int:
    try:
        table: dict[int, int] = {}
        return table[x]
    except KeyError:
        return helper_raise(x)


def _fork_of(fn: Callable[[int], Any]) -> Any:
    return Flow("tb-fork").fork().branch(ok).branch(fn).join(lambda d: d, name="j").build()


TRACEBACK_SHAPES: dict[str, tuple[Callable[[], Any], str]] = {
    "sync": (lambda: Flow("tb").then(sync_task).build(), "sync_task"),
    "async": (lambda: Flow("tb").then(async_task).build(), "async_task"),
    "timed-thread": (lambda: Flow("tb").then(timed_task).build(), "timed_task"),
    "retried": (lambda: Flow("tb").then(retried_task).build(), "retried_task"),
    "chained": (lambda: Flow("tb").then(chained_task).build(), "chained_task"),
    "fork-branch": (lambda: _fork_of(sync_task), "sync_task"),
    "async-fork-branch": (lambda: _fork_of(async_task), "async_task"),
}


@pytest.mark.parametrize("shape", list(TRACEBACK_SHAPES))
def test_task_error_traceback_shows_the_users_frames_only(shape):
    build, task_name = TRACEBACK_SHAPES[shape]
    with pytest.raises(TaskError) as info:
        run_workflow(build(), 1)
    head, _, tail = str(info.value).partition("\n\n")
    assert head == "ValueError: boom 1"
    assert tail.startswith("Traceback (most recent call last):\n"), tail
    files = [line for line in tail.splitlines() if line.startswith("  File ")]
    # The task's own frame first, then what it called; no frame of sayiir, asyncio or threads.
    assert files == [
        f'  File "{__file__}", line {_line_of(task_name)}, in {task_name}',
        f'  File "{__file__}", line {_line_of("helper_raise")}, in helper_raise',
    ], tail
    # The reference's shape: no "During handling..." chain and no repeated last line.
    assert tail.endswith('    raise ValueError(f"boom {x}")\n'), tail


def _line_of(fn_name: str) -> int:
    """The line of the frame shown for ``fn_name``: its call of helper_raise, or the raise."""
    needle = 'raise ValueError(f"boom {x}")' if fn_name == "helper_raise" else "helper_raise(x)"
    lines = Path(__file__).read_text().splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith((f"def {fn_name}(", f"async def {fn_name}("))
    )
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1
