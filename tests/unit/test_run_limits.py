"""The ``Flow`` run-limit options are checked when the flow is built, with messages that say
what to give instead (sayiir.core.limits)."""

from __future__ import annotations

from typing import Any

import pytest

from sayiir import Flow


def _build(**limits: Any) -> Any:
    return Flow("limited", **limits).then(lambda x: x, name="t").build()


def test_a_per_key_and_a_workflow_wide_limit_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both: the two together are not supported"):
        _build(max_concurrent_runs=10, concurrency_key=lambda o: o["customer"], max_concurrent=1)


@pytest.mark.parametrize(
    ("limits", "error", "message"),
    [
        ({"max_concurrent": 2}, ValueError, "give one too"),
        ({"concurrency_key": "customer"}, TypeError, "must be a function"),
        ({"max_concurrent_runs": 0}, ValueError, "at least 1, not 0"),
        ({"max_concurrent_runs": True}, TypeError, "must be an int"),
        ({"concurrency_key": len, "max_concurrent": 1.5}, TypeError, "must be an int"),
    ],
)
def test_bad_limits_are_refused_with_what_to_do(
    limits: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _build(**limits)


def test_a_key_function_that_raises_fails_the_submit_with_its_message() -> None:
    from sayiir import InMemoryBackend, WorkflowClient
    from sayiir.errors import InstanceNotFoundError

    wf = _build(concurrency_key=lambda o: o["customer"], max_concurrent=1)
    client = WorkflowClient(InMemoryBackend())
    with pytest.raises(ValueError, match="concurrency_key of workflow 'limited' raised"):
        client.submit(wf, "r1", {"no": "customer"})
    with pytest.raises(InstanceNotFoundError):
        client.status("r1")
