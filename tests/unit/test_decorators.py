"""The ``@task`` decorator (spec §3) and the ``parse_duration`` re-export (§5)."""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest

from sayiir.core import durations
from sayiir.core.metadata import RetryPolicy, TaskMetadata
from sayiir.decorators import parse_duration, task


def _fn(x: int) -> str:
    return str(x)


def _decorate(**options: object) -> object:
    def fn(x: int) -> str:
        return str(x)

    return task(**options)(fn)  # type: ignore[call-overload]


# -- forms --------------------------------------------------------------------------------


def test_bare_decorator_returns_the_function_itself() -> None:
    def double(x: int) -> int:
        return x * 2

    assert task(double) is double
    assert double._task_id == "double"  # type: ignore[attr-defined]
    assert double(2) == 4


def test_empty_call_form() -> None:
    @task()
    def double(x: int) -> int:
        return x * 2

    assert double._task_id == "double"  # type: ignore[attr-defined]


def test_positional_name() -> None:
    @task("charge")
    def charge_card(order: dict[str, int]) -> dict[str, int]:
        return order

    assert charge_card._task_id == "charge"  # type: ignore[attr-defined]
    assert charge_card._metadata.display_name == "charge"  # type: ignore[attr-defined]


def test_keyword_name_and_options() -> None:
    @task(name="charge", retries=3, timeout="30s")
    def charge_card(order: dict[str, int]) -> dict[str, int]:
        return order

    meta = charge_card._metadata  # type: ignore[attr-defined]
    assert charge_card._task_id == "charge"  # type: ignore[attr-defined]
    assert (meta.timeout_secs, meta.retries.max_retries) == (30.0, 3)


def test_positional_name_wins_over_keyword() -> None:
    decorated = task("pos", name="kw")(_fn)
    assert decorated._task_id == "pos"  # type: ignore[attr-defined]


def test_positional_name_with_options() -> None:
    @task("charge", timeout="1m", priority=1)
    def fn(x: int) -> int:
        return x

    assert fn._task_id == "charge"  # type: ignore[attr-defined]
    assert fn._metadata.timeout_secs == 60.0  # type: ignore[attr-defined]


def test_async_function_stays_a_coroutine_function() -> None:
    @task
    async def fetch(x: int) -> int:
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert fetch._task_id == "fetch"  # type: ignore[attr-defined]


def test_lambda_keeps_its_reference_id() -> None:
    assert task(lambda x: x)._task_id == "<lambda>"  # type: ignore[attr-defined]


def test_methods_can_be_decorated() -> None:
    class Service:
        @task("svc")
        def run(self, x: int) -> int:
            return x

    assert Service().run._task_id == "svc"  # type: ignore[attr-defined]
    assert Service().run(3) == 3


def test_callable_without_name_needs_name() -> None:
    class Op:
        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"name="):
        task(Op())
    assert task("op")(Op())._task_id == "op"  # type: ignore[attr-defined]


def test_builtin_cannot_be_decorated() -> None:
    with pytest.raises(TypeError, match=r"cannot set attributes"):
        task(len)


def test_non_callable_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"function or a task name"):
        task(5)  # type: ignore[call-overload]


# -- attributes ---------------------------------------------------------------------------


def test_metadata_fields() -> None:
    @task("n", description="does n", timeout="2m", retries=1, tags=["a", "b"], priority=2)
    def fn(x: int) -> int:
        return x

    meta = fn._metadata  # type: ignore[attr-defined]
    assert isinstance(meta, TaskMetadata)
    assert meta.display_name == "n"
    assert meta.description == "does n"
    assert meta.timeout_secs == 120.0
    assert meta.retries == RetryPolicy(1, 1.0, 2.0)
    assert meta.tags == ["a", "b"]
    assert meta.priority == 2
    assert meta.version is None


def test_defaults_leave_options_unset() -> None:
    meta = task(_fn)._metadata  # type: ignore[attr-defined]
    assert (meta.timeout_secs, meta.retries, meta.tags, meta.priority) == (None, None, None, None)


def test_input_and_output_types() -> None:
    decorated = task(_fn)
    assert decorated._input_type is int  # type: ignore[attr-defined]
    assert decorated._output_type is str  # type: ignore[attr-defined]


def test_types_are_none_when_absent() -> None:
    def no_params() -> int:
        return 1

    def unannotated(x, y):
        return x

    assert task(no_params)._input_type is None  # type: ignore[attr-defined]
    assert task(unannotated)._input_type is None  # type: ignore[attr-defined]
    assert unannotated._output_type is None  # type: ignore[attr-defined]


def test_unresolvable_hints_count_as_absent() -> None:
    def broken(x: Missing) -> AlsoMissing:  # type: ignore[name-defined]  # noqa: F821
        return x

    decorated = task(broken)
    assert (decorated._input_type, decorated._output_type) == (None, None)  # type: ignore[attr-defined]
    assert decorated._task_id == "broken"  # type: ignore[attr-defined]


# -- timeout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("100ms", 0.1),
        ("2h", 7200.0),
        (1.5, 1.5),
        (3, 3.0),
        (timedelta(seconds=4), 4.0),
    ],
)
def test_timeout_forms(value: object, seconds: float) -> None:
    assert _decorate(timeout=value)._metadata.timeout_secs == seconds  # type: ignore[attr-defined]


def test_legacy_timeout_secs() -> None:
    assert _decorate(timeout_secs=5)._metadata.timeout_secs == 5.0  # type: ignore[attr-defined]


def test_timeout_wins_over_timeout_secs() -> None:
    decorated = _decorate(timeout="1s", timeout_secs=99)
    assert decorated._metadata.timeout_secs == 1.0  # type: ignore[attr-defined]


def test_invalid_timeout_string() -> None:
    with pytest.raises(ValueError, match=r'^Invalid duration: "1d"\. Expected a number'):
        task(timeout="1d")


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf")])
def test_negative_or_non_finite_timeout(value: float) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a finite non-negative number$"):
        task(timeout=value)


# -- retries ------------------------------------------------------------------------------


def test_int_retries_use_reference_backoff() -> None:
    policy = _decorate(retries=3)._metadata.retries  # type: ignore[attr-defined]
    assert (policy.max_retries, policy.initial_delay_secs, policy.backoff_multiplier) == (
        3,
        1.0,
        2.0,
    )


def test_zero_retries_is_a_policy() -> None:
    assert _decorate(retries=0)._metadata.retries == RetryPolicy(0, 1.0, 2.0)  # type: ignore[attr-defined]


def test_retry_policy_is_used_as_is() -> None:
    policy = RetryPolicy(max_retries=5, initial_delay_secs=0.5)
    assert _decorate(retries=policy)._metadata.retries is policy  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["3", 1.5, True])
def test_retries_of_wrong_type(value: object) -> None:
    with pytest.raises(TypeError):
        task(retries=value)  # type: ignore[call-overload]


def test_negative_retries() -> None:
    with pytest.raises(ValueError):
        task(retries=-1)


# -- priority and tags ----------------------------------------------------------------------


@pytest.mark.parametrize("priority", [1, 3, 5])
def test_priority_in_range(priority: int) -> None:
    assert _decorate(priority=priority)._metadata.priority == priority  # type: ignore[attr-defined]


@pytest.mark.parametrize("priority", [0, 6, -1])
def test_priority_out_of_range(priority: int) -> None:
    with pytest.raises(ValueError, match=f"^priority must be between 1 and 5, got {priority}$"):
        task(priority=priority)


@pytest.mark.parametrize("priority", [2.5, "2", True])
def test_priority_of_wrong_type(priority: object) -> None:
    with pytest.raises(TypeError):
        task(priority=priority)  # type: ignore[call-overload]


def test_twenty_tags_are_allowed() -> None:
    tags = [f"t{i}" for i in range(20)]
    assert _decorate(tags=tags)._metadata.tags == tags  # type: ignore[attr-defined]


def test_too_many_tags() -> None:
    with pytest.raises(ValueError, match=r"^too many tags: 21 \(max 20\)$"):
        task(tags=["a"] * 21)


def test_empty_tag() -> None:
    with pytest.raises(ValueError, match=r"^tags must not contain empty strings$"):
        task(tags=["a", ""])


def test_tag_length_limit() -> None:
    assert _decorate(tags=["x" * 64])._metadata.tags == ["x" * 64]  # type: ignore[attr-defined]
    long_tag = "x" * 65
    with pytest.raises(ValueError) as info:
        task(tags=[long_tag])
    assert str(info.value) == f"tag too long: '{long_tag}' (65 chars, max 64)"


def test_tags_are_copied() -> None:
    tags = ["a"]
    decorated = _decorate(tags=tags)
    tags.append("b")
    assert decorated._metadata.tags == ["a"]  # type: ignore[attr-defined]


def test_tuple_of_tags_becomes_a_list() -> None:
    assert _decorate(tags=("a", "b"))._metadata.tags == ["a", "b"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("tags", ["ab", [1]])
def test_tags_must_be_strings(tags: object) -> None:
    with pytest.raises(TypeError):
        task(tags=tags)  # type: ignore[call-overload]


def test_validation_happens_before_a_function_is_given() -> None:
    with pytest.raises(ValueError, match=r"priority"):
        task(priority=9)


def test_each_function_gets_its_own_metadata() -> None:
    deco = task(tags=["a"])
    first, second = deco(lambda x: x), deco(lambda y: y)
    assert first._metadata is not second._metadata  # type: ignore[attr-defined]
    assert first._metadata.tags is not second._metadata.tags  # type: ignore[attr-defined]


# -- parse_duration ---------------------------------------------------------------------------


def test_parse_duration_is_reexported() -> None:
    assert parse_duration is durations.parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("100ms", 0.1), (" 3 S ", 3.0), ("1.5m", 90.0), ("2h", 7200.0), (5, 5.0), (0.25, 0.25)],
)
def test_parse_duration_accepts(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["1d", "5 days", "1h30m", "-5s", ".5s", "5", "1e3s"])
def test_parse_duration_rejects(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == (
        f'Invalid duration: "{value}". Expected a number (seconds) or a string like '
        '"30s", "5m", "1h", "100ms".'
    )
