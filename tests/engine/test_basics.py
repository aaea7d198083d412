"""Linear flows, callables of every kind and the JSON round trip (spec §2, §3.3, §6.1, §8.1)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sayiir import Flow, InMemoryBackend, run_durable_workflow, run_workflow, task


@task
def add_one(x: int) -> int:
    return x + 1


@task("twice")
def double(x: int) -> int:
    return x * 2


def square(x: int) -> int:
    return x * x


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor


# -- then and callables -----------------------------------------------------------------------


def test_then_chains_decorated_plain_and_lambda(path):
    wf = Flow("chain").then(add_one).then(double).then(square).then(lambda x: x - 1).build()
    out = path.run(wf, 2)
    assert out.ok, out.error
    assert out.value == ((2 + 1) * 2) ** 2 - 1


def test_first_task_receives_the_workflow_input(path):
    seen: list[Any] = []

    def record(x):
        seen.append(x)
        return "done"

    out = path.run(Flow("in").then(record).build(), {"a": [1, 2]})
    assert out.ok and out.value == "done"
    assert seen == [{"a": [1, 2]}]


def test_bound_method_as_task(path):
    s3 = Scaler(3)
    wf = Flow("bound").then(s3.scale).then(Scaler(5).scale, name="scale5").build()
    out = path.run(wf, 2)
    assert out.ok, out.error
    assert out.value == 30


def test_builtins_as_tasks(path):
    wf = Flow("builtins").then(str.upper).then(len).then(str).build()
    out = path.run(wf, "hello")
    assert out.ok, out.error
    assert out.value == "5"


def test_two_lambdas_get_distinct_ids_and_both_run(path):
    wf = Flow("lambdas").then(lambda x: x + 1).then(lambda x: x * 10).build()
    assert [n.id for n in wf.iter_nodes()] == ["lambda_0", "lambda_1"]
    out = path.run(wf, 1)
    assert out.ok and out.value == 20


def test_same_function_twice_with_name(path):
    wf = Flow("reuse").then(double).then(double, name="again").build()
    out = path.run(wf, 5)
    assert out.ok and out.value == 20


def test_workflow_is_reusable(path):
    wf = Flow("reuse").then(add_one).build()
    assert [path.run(wf, i).value for i in range(3)] == [1, 2, 3]


def test_callable_object_as_task(path):
    class Adder:
        __name__ = "adder"

        def __call__(self, x: int) -> int:
            return x + 100

    out = path.run(Flow("obj").then(Adder()).build(), 1)
    assert out.ok and out.value == 101


def test_functools_partial_needs_a_name(path):
    import functools

    def add(a: int, x: int) -> int:
        return a + x

    wf = Flow("partial").then(functools.partial(add, 7), name="add7").build()
    out = path.run(wf, 1)
    assert out.ok and out.value == 8


def test_none_flows_between_steps(path):
    wf = Flow("none").then(lambda x: None).then(lambda x: x is None).build()
    out = path.run(wf, 1)
    assert out.ok and out.value is True


# -- JSON round trip between steps (§2) -----------------------------------------------------


def test_tuple_becomes_list_for_next_step(path):
    seen: list[Any] = []

    def nxt(x):
        seen.append(x)
        return x

    out = path.run(Flow("tuple").then(lambda x: (x, x + 1)).then(nxt).build(), 1)
    assert out.ok
    assert seen == [[1, 2]] and type(seen[0]) is list
    assert out.value == [1, 2]


def test_int_dict_keys_become_strings(path):
    seen: list[Any] = []

    def nxt(x):
        seen.append(x)
        return x

    out = path.run(Flow("keys").then(lambda x: {1: "a", 2: [x]}).then(nxt).build(), 7)
    assert out.ok
    assert seen == [{"1": "a", "2": [7]}]
    assert out.value == {"1": "a", "2": [7]}


def test_next_task_gets_a_copy_not_the_same_object(path):
    shared: dict[str, Any] = {"k": [1]}
    seen: list[Any] = []

    def nxt(x):
        seen.append(x)
        return 0

    out = path.run(Flow("copy").then(lambda _: shared).then(nxt).build(), 0)
    assert out.ok
    assert seen == [shared] and seen[0] is not shared


def test_nan_and_infinity_pass_through(path):
    out = path.run(Flow("nan").then(lambda x: [float("nan"), float("inf")]).build(), 0)
    assert out.ok, out.error
    assert math.isnan(out.value[0]) and out.value[1] == float("inf")


def test_workflow_input_round_trips_too(path):
    seen: list[Any] = []

    def first(x):
        seen.append(x)
        return x

    out = path.run(Flow("input").then(first).build(), {3: (1, 2)})
    assert out.ok
    assert seen == [{"3": [1, 2]}]


def test_unserializable_input_raises_type_error_before_any_task_plain(ledger):
    wf = Flow("bad-in").then(lambda x: ledger.add("ran")).build()
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        run_workflow(wf, {1, 2})
    assert ledger.entries == []


def test_unserializable_input_raises_type_error_before_any_task_durable(backend, iid, ledger):
    wf = Flow("bad-in").then(lambda x: ledger.add("ran")).build()
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        run_durable_workflow(wf, iid, {1, 2}, backend=backend)
    assert ledger.entries == []
    # Nothing was stored: the same id can be used for a good run.
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "completed"


def test_unserializable_input_type_error_is_raw_not_wrapped():
    wf = Flow("bad-in").then(add_one).build()
    with pytest.raises(TypeError) as info:
        run_workflow(wf, object())
    assert type(info.value) is TypeError


def test_unserializable_output_is_a_task_failure_naming_the_type(path, ledger):
    def after(x):
        ledger.add("after")
        return x

    wf = Flow("bad-out").then(lambda x: {x}, name="make_set").then(after).build()
    out = path.run(wf, 1)
    assert not out.ok
    assert out.error is not None
    assert out.error.startswith("TypeError: Object of type set is not JSON serializable")
    assert ledger.entries == []


def test_unserializable_output_plain_raises_task_error():
    from sayiir import TaskError

    wf = Flow("bad-out").then(lambda x: object()).build()
    with pytest.raises(TaskError, match="Object of type object is not JSON serializable"):
        run_workflow(wf, 1)


def test_unserializable_output_is_retried(path, ledger):
    from sayiir import RetryPolicy

    @task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def make_set(x):
        ledger.add("make_set")
        return {x}

    out = path.run(Flow("bad-out-retry").then(make_set).build(), 1)
    assert not out.ok
    assert ledger.count("make_set") == 3


# -- durable specifics of the linear path ---------------------------------------------------


def test_durable_run_returns_completed_status(backend, iid):
    status = run_durable_workflow(
        Flow("lin").then(add_one).then(double).build(), iid, 4, backend=backend
    )
    assert status.status == "completed" and status.is_completed()
    assert status.output == 10
    assert status.error is None


def test_durable_checkpoint_is_visible_per_task(backend, iid):
    from sayiir import WorkflowClient

    wf = Flow("lin").then(add_one).then(double).build()
    run_durable_workflow(wf, iid, 4, backend=backend)
    client = WorkflowClient(backend)
    assert client.get_task_result(iid, "add_one") == 5
    assert client.get_task_result(iid, "twice") == 10


def test_run_durable_without_backend_uses_a_throwaway_backend(iid):
    wf = Flow("lin").then(add_one).build()
    assert run_durable_workflow(wf, iid, 1).output == 2
    # A second call with the same id and no backend is a new, independent backend.
    assert run_durable_workflow(wf, iid, 2).output == 3


def test_run_workflow_with_instance_id_is_durable(backend, iid):
    wf = Flow("lin").then(add_one).build()
    assert run_workflow(wf, 1, instance_id=iid, backend=backend) == 2
    from sayiir import InstanceAlreadyExistsError

    with pytest.raises(InstanceAlreadyExistsError):
        run_workflow(wf, 1, instance_id=iid, backend=backend)


def test_run_workflow_with_instance_id_failure_is_plain_workflow_error(backend, iid):
    from sayiir import TaskError, WorkflowError

    def boom(x):
        raise ValueError("boom")

    wf = Flow("fail").then(boom).build()
    with pytest.raises(WorkflowError) as info:
        run_workflow(wf, 1, instance_id=iid, backend=backend)
    assert not isinstance(info.value, TaskError)
    assert str(info.value) == (
        "Workflow did not complete (status=failed). "
        "Use run_durable_workflow() to inspect the full status."
    )


def test_run_workflow_plain_ignores_backend_and_policy():
    wf = Flow("lin").then(add_one).build()
    b = InMemoryBackend()
    assert run_workflow(wf, 1, backend=b, conflict_policy="nope") == 2


def test_task_error_message_has_type_message_and_traceback():
    from sayiir import TaskError

    def boom(x):
        raise ValueError(f"bad {x}")

    with pytest.raises(TaskError) as info:
        run_workflow(Flow("tb").then(boom).build(), 3)
    text = str(info.value)
    head, _, tail = text.partition("\n\n")
    assert head == "ValueError: bad 3"
    assert "Traceback" in tail and "boom" in tail


def test_durable_failure_error_has_no_traceback(backend, iid):
    def boom(x):
        raise ValueError(f"bad {x}")

    status = run_durable_workflow(Flow("tb").then(boom).build(), iid, 3, backend=backend)
    assert status.status == "failed" and status.is_failed()
    assert status.error == "ValueError: bad 3"
    assert status.output is None


def test_list_of_name_and_byte_lists_is_not_mangled(path):
    # Reference quirk (§2, §21.13): such a value was mis-decoded as fork branch results.
    value = [["name", [49, 50]], ["other", [51]]]
    out = path.run(Flow("quirk").then(lambda x: x, name="same").build(), value)
    assert out.ok and out.value == value


def test_non_string_keys_of_every_kind_become_strings(path):
    wf = (
        Flow("keys2")
        .then(lambda x: {True: 1, None: 2, 1.5: 3, 7: 4}, name="make")
        .then(lambda d: sorted(d.items()), name="items")
        .build()
    )
    out = path.run(wf, 0)
    assert out.ok, out.error
    assert out.value == [["1.5", 3], ["7", 4], ["null", 2], ["true", 1]]


def test_set_nested_in_output_is_a_failure(path):
    out = path.run(Flow("nested-set").then(lambda x: {"a": [frozenset()]}, name="m").build(), 0)
    assert not out.ok
    assert out.error is not None
    assert out.error.startswith("TypeError: Object of type frozenset is not JSON serializable")
