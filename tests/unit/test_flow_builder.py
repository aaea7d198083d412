"""Build-time behaviour of ``Flow``, ``FlowBuilder`` and ``Workflow`` (spec §6-§8).

Execution is tested elsewhere; here only structure, ids, errors and hashes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from typing import Any

import pytest

from sayiir.core.builder import FlowBuilder, envelope_task_id
from sayiir.core.metadata import RetryPolicy, TaskMetadata
from sayiir.core.nodes import (
    ChildNode,
    DelayNode,
    ForkNode,
    NodeInfo,
    RouteNode,
    SignalNode,
    TaskNode,
    WorkflowDefinition,
    walk_nodes,
)
from sayiir.decorators import task
from sayiir.flow import BranchBuilder, Flow, ForkBuilder, Workflow
from sayiir.loop_result import LoopResult, OnMax


def a(x: Any) -> Any:
    return x


def b(x: Any) -> Any:
    return x


def c(x: Any) -> Any:
    return x


def j(x: Any) -> Any:
    return x


def n(x: Any) -> Any:
    return x


@task("double", timeout="2s", retries=2, priority=4)
def double(x: int) -> int:
    return x * 2


def nodes(wf: Workflow) -> list[tuple[str, str, str | None]]:
    return [(i.id, i.kind, i.predecessor_id) for i in wf.iter_nodes()]


def ids(wf: Workflow) -> list[str]:
    return [i.id for i in wf.iter_nodes()]


# -- ids (§8.1) -------------------------------------------------------------------------------


def test_explicit_name_wins() -> None:
    assert ids(Flow().then(double, name="twice").build()) == ["twice"]


def test_decorated_task_id() -> None:
    assert ids(Flow().then(double).build()) == ["double"]


def test_function_name() -> None:
    assert ids(Flow().then(a).build()) == ["a"]


def test_builtin_method_name() -> None:
    assert ids(Flow().then(str.upper).build()) == ["upper"]


def test_lambdas_and_nameless_callables_are_numbered_in_call_order() -> None:
    class Op:
        def __call__(self, x: Any) -> Any:
            return x

    wf = (
        Flow()
        .then(lambda x: x)
        .then(a)
        .then(Op())
        .then(functools.partial(a))
        .then(lambda x: x, name="named")
        .build()
    )
    assert ids(wf) == ["lambda_0", "a", "lambda_1", "lambda_2", "named"]


def test_lambda_counter_runs_across_branches_and_joins() -> None:
    wf = (
        Flow()
        .fork()
        .branch(lambda x: x, lambda x: x)
        .branch(lambda x: x)
        .join(lambda d: d)
        .route(lambda x: "k", keys=["k"])
        .branch("k", lambda x: x)
        .done()
        .loop(lambda x: LoopResult.done(x))
        .build()
    )
    assert ids(wf) == [
        "lambda_0||lambda_2",
        "lambda_0",
        "lambda_1",
        "lambda_2",
        "lambda_3",
        "branch_0",
        "lambda_4",
        "loop_0",
        "lambda_5",
    ]


def test_name_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        Flow().then(a, name=1)  # type: ignore[arg-type]


def test_non_callable_task_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"task function"):
        Flow().then(5)  # type: ignore[arg-type]


# -- then / build (§6.1, §6.8) --------------------------------------------------------------


def test_methods_return_the_flow() -> None:
    flow = Flow()
    assert flow.then(a) is flow
    assert flow.delay("d", 1) is flow
    assert flow.wait_for_signal("s") is flow
    assert flow.loop(b) is flow
    assert flow.then_flow(Flow("c").then(c).build()) is flow
    assert isinstance(flow.fork(), ForkBuilder)
    assert isinstance(flow.route(a, keys=["x"]), BranchBuilder)


def test_empty_flow_cannot_be_built() -> None:
    with pytest.raises(ValueError, match=r"^Workflow must have at least one task$"):
        Flow().build()


def test_build_can_be_called_again() -> None:
    flow = Flow("f").then(a)
    first = flow.build()
    second = flow.then(b).build()
    assert ids(first) == ["a"]
    assert ids(second) == ["a", "b"]
    assert "b" not in first._task_registry  # each build gets its own registry


def test_default_name() -> None:
    assert Flow().then(a).build().workflow_id == "workflow"


# -- delay (§6.2) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("1m", 60.0), (2, 2.0), (0.5, 0.5), (0, 0.0), (timedelta(minutes=2), 120.0)],
)
def test_delay_durations(duration: Any, seconds: float) -> None:
    (info,) = Flow().delay("wait", duration).build().iter_nodes()
    assert (info.id, info.kind, info.timeout_secs) == ("wait", "delay", seconds)


@pytest.mark.parametrize("duration", [-1, float("nan"), float("inf"), timedelta(seconds=-1)])
def test_delay_rejects_negative_and_non_finite(duration: Any) -> None:
    with pytest.raises(ValueError, match=r"^delay duration must be a finite non-negative number$"):
        Flow().delay("d", duration)


def test_delay_rejects_bad_string() -> None:
    with pytest.raises(ValueError, match=r'^Invalid duration: "1d"'):
        Flow().delay("d", "1d")


# -- wait_for_signal (§6.3) -------------------------------------------------------------------


def test_signal_node_id_defaults_to_signal_name() -> None:
    wf = Flow().wait_for_signal("approved").wait_for_signal("again", name="second").build()
    assert nodes(wf) == [("approved", "await_signal", None), ("second", "await_signal", "approved")]
    inner = wf._inner.nodes
    assert inner[1] == SignalNode("second", "again", None)


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("30s", 30.0), (5, 5.0), (timedelta(hours=1), 3600.0), (None, None)]
)
def test_signal_timeouts(timeout: Any, seconds: float | None) -> None:
    (info,) = Flow().wait_for_signal("s", timeout=timeout).build().iter_nodes()
    assert info.timeout_secs == seconds


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf")])
def test_signal_rejects_negative_and_non_finite_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a finite non-negative number$"):
        Flow().wait_for_signal("s", timeout=timeout)


# -- then_flow (§6.4) -------------------------------------------------------------------------


def test_then_flow_inlines_the_child() -> None:
    child = Flow("child").then(b).then(c).build()
    other = Flow("other").then(n).build()
    wf = Flow("p").then(a).then_flow(child).then_flow(other).build()
    assert nodes(wf) == [
        ("a", "task", None),
        ("child_0", "child_workflow", "a"),
        ("b", "task", "child_0"),
        ("c", "task", "b"),
        ("child_1", "child_workflow", "child_0"),
        ("n", "task", "child_1"),
    ]
    assert wf._task_registry == {"a": a, "b": b, "c": c, "n": n}
    assert wf._inner.nodes[1] == ChildNode("child_0", "child", (TaskNode("b"), TaskNode("c")))


def test_then_accepts_a_workflow_like_then_flow() -> None:
    child = Flow("child").then(b).build()
    assert nodes(Flow().then(child).build()) == nodes(Flow().then_flow(child).build())
    assert ids(Flow().then(child, name="sub").build()) == ["sub", "b"]


def test_then_flow_requires_a_workflow() -> None:
    with pytest.raises(TypeError, match=r"expects a Workflow"):
        Flow().then_flow(a)  # type: ignore[arg-type]


def test_then_flow_rejects_a_different_callable_under_the_same_id() -> None:
    child = Flow("c").then(lambda x: x * 10).build()
    parent = Flow("p").then(lambda x: x + 1)
    with pytest.raises(ValueError, match=r"'lambda_0'.*child workflow 'c'.*name="):
        parent.then_flow(child)


def test_then_flow_accepts_the_same_callable_under_the_same_id() -> None:
    shared = Flow("c").then(b).build()
    wf = Flow("p").then_flow(shared).then(b).build()  # merging is fine, and so is the reuse
    assert keys(wf) == ["b", "b#2"]


def test_ids_generated_after_a_child_skip_the_childs_ids() -> None:
    child = Flow("c").then(lambda x: x).route(a, keys=["k"]).branch("k", b).done().build()
    wf = Flow("p").then_flow(child).then(lambda x: x).route(c, keys=["k"]).branch("k", n).done()
    built = wf.build()
    assert [i for i in ids(built) if i.startswith(("lambda", "branch"))] == [
        "lambda_0",
        "branch_0",
        "lambda_1",
        "branch_1",
    ]
    assert {"branch_0::key_fn", "branch_1::key_fn"} <= built._task_registry.keys()


def test_route_ids_of_parent_and_child_may_not_collide() -> None:
    child = Flow("c").route(a, keys=["k"]).branch("k", b).done().build()
    parent = Flow("p").route(c, keys=["k"]).branch("k", n).done()
    with pytest.raises(ValueError, match=r"'branch_0::key_fn'.*inline the child before"):
        parent.then_flow(child)


def test_loop_and_child_ids_keep_reference_numbering() -> None:
    inner = Flow("i").then(c).build()
    child = Flow("c").then_flow(inner).loop(b).build()
    wf = Flow("p").loop(a).then_flow(child).build()
    assert ids(wf) == ["loop_0", "a", "child_0", "child_0", "c", "loop_0", "b"]


# -- route (§6.5) -----------------------------------------------------------------------------


def test_route_structure_and_key_function() -> None:
    def key(x: Any) -> str:
        return "a"

    wf = (
        Flow()
        .route(key, keys=["a", "b"])
        .branch("a", a, b)
        .branch("b", c)
        .default_branch(n)
        .done()
        .then(j)
        .build()
    )
    assert nodes(wf) == [
        ("branch_0", "branch", None),
        ("a", "task", "branch_0"),
        ("b", "task", "a"),
        ("c", "task", "branch_0"),
        ("n", "task", "branch_0"),
        ("j", "task", "branch_0"),
    ]
    assert wf._task_registry["branch_0::key_fn"] is key
    route = wf._inner.nodes[0]
    assert isinstance(route, RouteNode)
    assert route.keys == ("a", "b")
    assert [k for k, _ in route.branches] == ["a", "b"]


def test_route_key_function_does_not_consume_a_lambda_id() -> None:
    wf = Flow().route(lambda x: "k", keys=["k"]).branch("k", lambda x: x).done().build()
    assert ids(wf) == ["branch_0", "lambda_0"]
    assert set(wf._task_registry) == {"branch_0::key_fn", "lambda_0"}


def test_route_ids_count_per_flow() -> None:
    flow = Flow()
    for _ in range(2):
        flow.route(a, keys=["k"]).branch("k", lambda x: x).done()
    assert [i for i in ids(flow.build()) if i.startswith("branch")] == ["branch_0", "branch_1"]


def test_branch_requires_a_task() -> None:
    with pytest.raises(ValueError, match=r"^branch\(\) requires at least one task function$"):
        Flow().route(a, keys=["k"]).branch("k")


def test_branch_key_must_be_declared() -> None:
    with pytest.raises(ValueError) as info:
        Flow().route(a, keys=["a"]).branch("c", b)
    assert str(info.value) == "Branch key 'c' is not in the declared keys: ['a']"


def test_undeclared_key_message_shows_keys_as_given() -> None:
    with pytest.raises(ValueError, match=r"declared keys: \('a',\)$"):
        Flow().route(a, keys=("a",)).branch("c", b)


def test_missing_branches_without_default() -> None:
    builder = Flow().route(a, keys=["c", "a", "b"]).branch("a", b)
    with pytest.raises(ValueError, match=r"^Route: missing branches for keys: b, c$"):
        builder.done()


def test_missing_check_comes_before_empty_check() -> None:
    with pytest.raises(ValueError, match=r"^Route: missing branches for keys: a, b$"):
        Flow().route(a, keys=["a", "b"]).done()


def test_default_covers_missing_keys() -> None:
    wf = Flow().route(a, keys=["a", "b"]).branch("a", b).default_branch(c).done().build()
    assert ids(wf) == ["branch_0", "b", "c"]


def test_route_needs_a_branch_even_with_a_default() -> None:
    with pytest.raises(ValueError, match=r"^Branch must have at least one step$"):
        Flow().route(a, keys=["a"]).default_branch(b).done()


def test_default_branch_requires_a_task() -> None:
    with pytest.raises(ValueError, match=r"^default_branch\(\) requires at least one task"):
        Flow().route(a, keys=["a"]).default_branch()


def test_second_default_replaces_the_first() -> None:
    wf = (
        Flow()
        .route(a, keys=["a"])
        .branch("a", b)
        .default_branch(c)
        .default_branch(n)
        .done()
        .build()
    )
    assert ids(wf) == ["branch_0", "b", "n"]


def test_branch_name_overrides_the_first_task_only() -> None:
    wf = (
        Flow()
        .route(a, keys=["k"])
        .branch("k", b, c, name="first")
        .default_branch(j, n, name="dflt")
        .done()
        .build()
    )
    assert ids(wf) == ["branch_0", "first", "c", "dflt", "n"]


def test_duplicate_branch_key() -> None:
    builder = Flow().route(a, keys=["k"]).branch("k", b)
    with pytest.raises(ValueError, match=r"^Route: duplicate branches for key: k$"):
        builder.branch("k", c)


def test_route_without_declared_keys() -> None:
    wf = Flow().route(a).branch("x", b).branch("y", c).done().build()
    route = wf._inner.nodes[0]
    assert isinstance(route, RouteNode)
    assert route.keys is None
    assert ids(wf) == ["branch_0", "b", "c"]


def test_branch_keys_must_be_strings() -> None:
    with pytest.raises(TypeError):
        Flow().route(a).branch(1, b)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Flow().route(a, keys=[1])  # type: ignore[list-item]


def test_route_key_function_must_be_callable() -> None:
    with pytest.raises(TypeError):
        Flow().route("key")  # type: ignore[arg-type]


def test_keys_list_is_copied() -> None:
    keys = ["a"]
    builder = Flow().route(a, keys=keys)
    keys.append("b")
    assert ids(builder.branch("a", b).done().build()) == ["branch_0", "b"]


# -- fork (§6.6) ------------------------------------------------------------------------------


def test_fork_structure_and_join() -> None:
    wf = Flow().then(a).fork().branch(b, c).branch(n).join(j).then(double).build()
    assert nodes(wf) == [
        ("a", "task", None),
        ("b||n", "fork", "a"),
        ("b", "task", "b||n"),
        ("c", "task", "b"),
        ("n", "task", "b||n"),
        ("j", "task", "b||n"),
        ("double", "task", "j"),
    ]
    fork = wf._inner.nodes[1]
    assert isinstance(fork, ForkNode)
    assert fork.branch_keys == ("b", "n")
    assert fork.join == TaskNode("j")


def test_fork_branch_requires_a_task() -> None:
    with pytest.raises(ValueError, match=r"^branch\(\) requires at least one task function$"):
        Flow().fork().branch()


def test_join_without_branches() -> None:
    with pytest.raises(ValueError, match=r"^Fork must have at least one branch$"):
        Flow().fork().join(j)


def test_fork_branch_name_overrides_the_first_task_only() -> None:
    wf = Flow().fork().branch(b, c, name="left").branch(n).join(j, name="merge").build()
    assert ids(wf) == ["left||n", "left", "c", "n", "merge"]


def test_fork_branches_with_the_same_first_id_are_rejected() -> None:
    # Not a key problem: the join's input is keyed by each branch's first step id.
    with pytest.raises(ValueError, match=r"^Duplicate task id: 'b' starts two branches of one fo"):
        Flow().fork().branch(b).branch(b).join(j)


def test_join_metadata_is_kept() -> None:
    wf = Flow().fork().branch(a).join(double).build()
    join = wf.iter_nodes()[-1]
    assert (join.id, join.timeout_secs, join.priority) == ("double", 2.0, 4)


# -- loop (§6.7) ------------------------------------------------------------------------------


def test_loop_structure() -> None:
    wf = Flow().then(a).loop(b, max_iterations=3, on_max="exit_with_last").then(c).build()
    assert nodes(wf) == [
        ("a", "task", None),
        ("loop_0", "loop", "a"),
        ("b", "task", "loop_0"),
        ("c", "task", "loop_0"),
    ]
    loop = wf._inner.nodes[1]
    assert (loop.max_iterations, loop.on_max) == (3, "exit_with_last")  # type: ignore[union-attr]


def test_loop_defaults() -> None:
    loop = Flow().loop(b).build()._inner.nodes[0]
    assert (loop.max_iterations, loop.on_max) == (10, "fail")  # type: ignore[union-attr]


def test_loop_name_overrides_the_body_id() -> None:
    assert ids(Flow().loop(b, name="body").build()) == ["loop_0", "body"]


def test_loop_accepts_on_max_enum_and_stores_a_plain_string() -> None:
    loop = Flow().loop(b, on_max=OnMax.EXIT_WITH_LAST).build()._inner.nodes[0]
    assert type(loop.on_max) is str  # type: ignore[union-attr]
    assert loop.on_max == "exit_with_last"  # type: ignore[union-attr]


@pytest.mark.parametrize("count", [0, -1])
def test_loop_max_iterations_at_least_one(count: int) -> None:
    with pytest.raises(ValueError, match=r"^Loop 'loop_0': max_iterations must be at least 1$"):
        Flow().loop(b, max_iterations=count)


def test_failed_loop_does_not_consume_its_id() -> None:
    flow = Flow().loop(a)
    with pytest.raises(ValueError, match=r"Loop 'loop_1'"):
        flow.loop(b, max_iterations=0)
    assert ids(flow.loop(c).build()) == ["loop_0", "a", "loop_1", "c"]


@pytest.mark.parametrize("count", [2.0, True, "3"])
def test_loop_max_iterations_must_be_an_int(count: Any) -> None:
    with pytest.raises(TypeError):
        Flow().loop(b, max_iterations=count)


def test_invalid_on_max() -> None:
    with pytest.raises(ValueError) as info:
        Flow().loop(b, on_max="x")
    assert str(info.value) == "Invalid on_max policy: 'x'. Use 'fail' or 'exit_with_last'."


def test_on_max_is_checked_before_max_iterations() -> None:
    with pytest.raises(ValueError, match=r"^Invalid on_max"):
        Flow().loop(b, max_iterations=0, on_max="x")


# -- iter_nodes (§7.3) ------------------------------------------------------------------------


def test_linear_order() -> None:
    assert nodes(Flow().then(a).then(b).then(c).build()) == [
        ("a", "task", None),
        ("b", "task", "a"),
        ("c", "task", "b"),
    ]


def test_node_info_fields() -> None:
    wf = Flow().then(a).then(double).delay("d", "5s").wait_for_signal("s", timeout=3).build()
    plain, decorated, delay, signal = wf.iter_nodes()
    assert (plain.timeout_secs, plain.retry_policy, plain.priority) == (None, None, None)
    assert decorated.timeout_secs == 2.0
    assert decorated.retry_policy == RetryPolicy(2, 1.0, 2.0)
    assert decorated.priority == 4
    assert (delay.timeout_secs, delay.retry_policy) == (5.0, None)
    assert signal.timeout_secs == 3.0
    assert repr(plain) == "NodeInfo(id='a', kind='task')"
    assert isinstance(plain, NodeInfo)


def test_composite_kinds() -> None:
    child = Flow("c").then(c).build()
    wf = (
        Flow()
        .fork()
        .branch(a)
        .join(j)
        .route(a, keys=["k"])
        .branch("k", b)
        .done()
        .loop(n)
        .then_flow(child)
        .build()
    )
    kinds = [(i.id, i.kind) for i in wf.iter_nodes()]
    assert kinds == [
        ("a", "fork"),
        ("a", "task"),
        ("j", "task"),
        ("branch_0", "branch"),
        ("b", "task"),
        ("loop_0", "loop"),
        ("n", "task"),
        ("child_0", "child_workflow"),
        ("c", "task"),
    ]


# -- Workflow (§7.1, §7.2) --------------------------------------------------------------------


def test_workflow_members() -> None:
    flow = Flow("orders", metadata={"team": "billing", "n": 1})
    wf = flow.then(a).build()
    assert wf.workflow_id == "orders"
    assert isinstance(wf._inner, WorkflowDefinition)
    assert wf._inner.workflow_id == "orders"
    assert wf._inner.definition_hash == wf.definition_hash
    assert json.loads(wf._inner.metadata_json or "") == {"team": "billing", "n": 1}
    assert wf._builder is flow._builder
    assert isinstance(wf._builder, FlowBuilder)
    assert [i.id for i in wf._inner.iter_nodes()] == ids(wf)


def test_metadata_is_decoded_afresh_on_each_access() -> None:
    wf = Flow("f", metadata={"k": [1]}).then(a).build()
    first = wf.metadata
    assert first == {"k": [1]}
    first["k"].append(2)
    assert wf.metadata == {"k": [1]}
    assert wf.metadata is not wf.metadata


def test_metadata_defaults_to_none() -> None:
    wf = Flow().then(a).build()
    assert wf.metadata is None
    assert wf._inner.metadata_json is None


def test_metadata_must_be_json_serializable() -> None:
    with pytest.raises(TypeError):
        Flow(metadata={"s": {1, 2}})


def test_workflow_constructor_signature() -> None:
    built = Flow("f").then(a).build()
    wf = Workflow(built._inner, {"a": a}, built._builder)
    assert (wf.workflow_id, wf._task_registry, ids(wf)) == ("f", {"a": a}, ["a"])


# -- definition hash (§7.1) -------------------------------------------------------------------


def _hash(flow: Flow) -> str:
    return flow.build().definition_hash


def test_hash_is_64_lowercase_hex() -> None:
    digest = _hash(Flow().then(a))
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)


def test_hash_ignores_workflow_name_and_metadata() -> None:
    assert _hash(Flow("a").then(a)) == _hash(Flow("b", metadata={"x": 1}).then(a))


def test_hash_ignores_code_description_tags_and_priority() -> None:
    @task("t")
    def first(x: int) -> int:
        return x

    @task("t", description="other", tags=["x"], priority=1)
    def second(x: int) -> int:
        return x + 1

    assert _hash(Flow().then(first)) == _hash(Flow().then(second))


def _with_meta(**options: Any) -> Flow:
    return Flow().then(a, name="t").then(task("t2", **options)(lambda x: x))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"timeout": "1s"}, {"timeout": "2s"}),
        ({}, {"timeout": "1s"}),
        ({"retries": 1}, {"retries": 2}),
        ({"retries": RetryPolicy(1, 1.0)}, {"retries": RetryPolicy(1, 2.0)}),
        ({"retries": RetryPolicy(1, 1.0, 2.0)}, {"retries": RetryPolicy(1, 1.0, 3.0)}),
        ({}, {"retries": 0}),
    ],
)
def test_hash_depends_on_task_options(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert _hash(_with_meta(**left)) != _hash(_with_meta(**right))
    assert _hash(_with_meta(**left)) == _hash(_with_meta(**left))


def test_hash_depends_on_task_version() -> None:
    one, two = FlowBuilder("f"), FlowBuilder("f")
    one.then("t", TaskMetadata(version="1"))
    two.then("t", TaskMetadata(version="2"))
    assert one.build().definition_hash != two.build().definition_hash


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (Flow().then(a), Flow().then(b)),
        (Flow().then(a).then(b), Flow().then(b).then(a)),
        (Flow().delay("d", 1), Flow().delay("d", 2)),
        (Flow().delay("d", 1), Flow().delay("e", 1)),
        (Flow().wait_for_signal("s"), Flow().wait_for_signal("t", name="s")),
        (Flow().wait_for_signal("s"), Flow().wait_for_signal("s", timeout=1)),
        (Flow().loop(a), Flow().loop(a, max_iterations=3)),
        (Flow().loop(a), Flow().loop(a, on_max="exit_with_last")),
        (Flow().loop(a), Flow().then(a)),
        (Flow().fork().branch(a).branch(b).join(j), Flow().fork().branch(a, b).join(j)),
        (
            Flow().route(c, keys=["x"]).branch("x", a).done(),
            Flow().route(c, keys=["y"]).branch("y", a).done(),
        ),
        (
            Flow().route(c, keys=["x"]).branch("x", a).done(),
            Flow().route(c, keys=["x"]).branch("x", a).default_branch(b).done(),
        ),
        (Flow().then_flow(Flow().then(a).build()), Flow().then(a)),
    ],
)
def test_hash_depends_on_structure(left: Flow, right: Flow) -> None:
    assert _hash(left) != _hash(right)


def test_hash_of_flow_matches_hand_built_definition() -> None:
    builder = FlowBuilder("other")
    builder.then("a")
    builder.then("double", double._metadata)  # type: ignore[attr-defined]
    assert builder.build().definition_hash == _hash(Flow().then(a).then(double))


_HASH_SCRIPT = textwrap.dedent(
    """
    from sayiir.decorators import task
    from sayiir.flow import Flow

    def a(x): return x

    @task("t", timeout="2s", retries=3)
    def t(x): return x

    child = Flow("child").then(lambda x: x, name="c1").build()
    flow = (
        Flow("p", metadata={"k": 1}).then(a).then(t).delay("d", "1m")
        .fork().branch(lambda x: x, name="f1").branch(child).join(lambda d: d, name="j")
        .route(lambda x: "k", keys=["k"]).branch("k", lambda x: x, name="r").done()
        .loop(lambda x: x, name="body", max_iterations=4).wait_for_signal("s", timeout=9)
    )
    print(flow.build().definition_hash)
    """
)


def test_hash_is_deterministic_across_processes() -> None:
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    namespace: dict[str, Any] = {}
    exec(_HASH_SCRIPT.replace("print(", "result = ("), namespace)
    assert digests == {namespace["result"]}


# -- repeated ids (§8.3, decision: accepted, one checkpoint key per use) ------------------------


def keys(wf: Workflow) -> list[str]:
    """Checkpoint keys of the tasks and waits, in definition order (loop scopes aside)."""
    steps = (TaskNode, DelayNode, SignalNode)
    return [n.key for n in walk_nodes(wf._inner.nodes) if isinstance(n, steps)]


def _dup(flow: Flow, task_id: str) -> None:
    with pytest.raises(ValueError, match=f"^Duplicate task id: '{task_id}' names two different"):
        flow.build()


def test_a_task_used_twice_gets_a_key_per_use() -> None:
    wf = Flow().then(double).then(double).build()
    assert ids(wf) == ["double", "double"]  # the id stays the function's
    assert keys(wf) == ["double", "double#2"]


def test_a_task_reused_in_a_fork_branch_and_the_sequence() -> None:
    assert keys(Flow().then(a).fork().branch(b, a).join(j).build()) == ["a", "b", "a#2", "j"]


def test_a_join_reusing_a_task() -> None:
    assert keys(Flow().then(j).fork().branch(a).join(j).build()) == ["j", "a", "j#2"]


def test_a_task_inside_and_outside_a_loop() -> None:
    assert keys(Flow().then(a).loop(a).build()) == ["a", "a#2"]


def test_a_child_workflow_used_twice() -> None:
    child = Flow("c").then(b).build()
    wf = Flow().then_flow(child).then_flow(child).build()
    assert ids(wf) == ["child_0", "b", "child_1", "b"]
    assert keys(wf) == ["b", "b#2"]


def test_duplicate_by_different_callables() -> None:
    _dup(Flow().then(a, name="x").then(b, name="x"), "x")


def test_different_callables_in_route_branches_under_one_id() -> None:
    flow = Flow().route(c).branch("p", a, name="h").branch("q", b, name="h").done()
    _dup(flow, "h")


def test_route_branches_may_share_a_task() -> None:
    wf = Flow().route(c, keys=["p", "q"]).branch("p", a).branch("q", a).default_branch(a).done()
    assert ids(wf.build()) == ["branch_0", "a", "a", "a"]
    assert keys(wf.build()) == ["a", "a", "a"]  # only one branch runs: one key for all


def test_a_task_of_a_route_branch_reused_outside_the_route() -> None:
    wf = Flow().route(c).branch("p", a).branch("q", b).done().then(b).then(a).build()
    assert keys(wf) == ["a", "b", "b#2", "a#2"]
    assert keys(Flow().then(a).route(c).branch("p", a).branch("q", a, a).done().build()) == [
        "a",
        "a#2",
        "a#2",
        "a#3",
    ]


def test_waits_count_their_uses_across_route_branches_as_before() -> None:
    # Keys of runs in flight must not change: waits keep numbering across route branches.
    nap = Flow("nap").then(b).delay("w", 1).build()
    wf = Flow().route(c).branch("p", nap).branch("q", nap).done().delay("w", 1).build()
    assert keys(wf) == ["b", "w", "b", "w#2", "w#3"]


def test_delay_and_signal_ids_may_repeat_but_not_a_tasks_key() -> None:
    waits = Flow().delay("w", 1).delay("w", 2).wait_for_signal("s").wait_for_signal("s").build()
    assert keys(waits) == ["w", "w#2", "s", "s#2"]
    with pytest.raises(ValueError, match=r"^task 'a' and signal wait 'a' would share the chec"):
        Flow().then(a).wait_for_signal("a").build()
    with pytest.raises(ValueError, match=r"^delay 'w' and task 'w' would share the checkpoint"):
        Flow().delay("w", 1).then(a, name="w").build()


# -- FlowBuilder (§7.4) -----------------------------------------------------------------------


def test_low_level_builder() -> None:
    builder = FlowBuilder("low")
    assert [builder.next_lambda_id(), builder.next_lambda_id()] == ["lambda_0", "lambda_1"]
    builder.then("a", TaskMetadata(timeout_secs=1.0))
    builder.delay("d", 2.0)
    builder.wait_for_signal("sig", "approve", 3.0)
    builder.add_fork([[("f1", None), ("f2", None)], [("g", None)]], "join")
    assert builder.add_branch([("k", [("h", None)])], [("dflt", None)]) == "branch_0"
    assert builder.add_loop("body", None, 4, OnMax.FAIL) == "loop_0"
    child = FlowBuilder("child")
    child.then("c")
    assert builder.add_child_workflow("child_0", child) == "child_0"
    builder.set_metadata_json('{"k": 1}')
    definition = builder.build()
    assert definition.workflow_id == "low"
    assert definition.metadata_json == '{"k": 1}'
    assert [(i.id, i.kind, i.predecessor_id) for i in definition.iter_nodes()] == [
        ("a", "task", None),
        ("d", "delay", "a"),
        ("sig", "await_signal", "d"),
        ("f1||g", "fork", "sig"),
        ("f1", "task", "f1||g"),
        ("f2", "task", "f1"),
        ("g", "task", "f1||g"),
        ("join", "task", "f1||g"),
        ("branch_0", "branch", "join"),
        ("h", "task", "branch_0"),
        ("dflt", "task", "branch_0"),
        ("loop_0", "loop", "branch_0"),
        ("body", "task", "loop_0"),
        ("child_0", "child_workflow", "loop_0"),
        ("c", "task", "child_0"),
    ]


def test_low_level_errors() -> None:
    builder = FlowBuilder("x")
    with pytest.raises(ValueError, match=r"^Workflow must have at least one task$"):
        builder.build()
    with pytest.raises(ValueError, match=r"^Fork must have at least one branch$"):
        builder.add_fork([], "j")
    with pytest.raises(ValueError, match=r"^Branch must have at least one step$"):
        builder.add_fork([[]], "j")
    with pytest.raises(ValueError, match=r"^Branch must have at least one step$"):
        builder.add_branch([], [("d", None)])
    with pytest.raises(ValueError, match=r"^Branch must have at least one step$"):
        builder.add_branch([("k", [])])
    with pytest.raises(ValueError, match=r"^Loop 'loop_0': max_iterations must be at least 1$"):
        builder.add_loop("body", None, 0)
    with pytest.raises(ValueError, match=r"^Invalid on_max policy: 'x'"):
        builder.add_loop("body", None, 3, "x")
    with pytest.raises(ValueError, match=r"^delay duration must be a finite"):
        builder.delay("d", -1)
    with pytest.raises(ValueError, match=r"^timeout must be a finite"):
        builder.wait_for_signal("s", "s", -1.0)
    with pytest.raises(TypeError):
        builder.then("a", {"timeout_secs": 1})  # type: ignore[arg-type]
    # Failed calls consume no generated id.
    assert builder.add_loop("body") == "loop_0"
    assert builder.add_branch([("k", [("h", None)])]) == "branch_0"


def test_builder_snapshots_metadata() -> None:
    meta = TaskMetadata(timeout_secs=1.0, retries=RetryPolicy(1))
    builder = FlowBuilder("f")
    builder.then("a", meta)
    before = builder.build().definition_hash
    meta.timeout_secs = 5.0
    assert meta.retries is not None
    meta.retries.max_retries = 9
    definition = builder.build()
    assert definition.definition_hash == before
    (info,) = definition.iter_nodes()
    assert (info.timeout_secs, info.retry_policy) == (1.0, RetryPolicy(1))


def test_builder_keys_each_use_of_an_id() -> None:
    builder = FlowBuilder("f")
    builder.then("a")
    builder.then("a")
    assert [n.key for n in builder.build().nodes] == ["a", "a#2"]  # type: ignore[union-attr]


def test_builder_child_from_definition_and_generated_id() -> None:
    child = Flow("c").then(c).build()
    builder = FlowBuilder("p")
    assert builder.add_child_workflow(None, child._inner) == "child_0"
    assert builder.next_child_id() == "child_1"


def test_envelope_task_id() -> None:
    assert envelope_task_id((TaskNode("a"), TaskNode("b"))) == "b"
    assert envelope_task_id((TaskNode("a"), DelayNode("d", 1.0))) == "a"
    fork = ForkNode("x", ((TaskNode("x"),),), TaskNode("j"))
    assert envelope_task_id((fork,)) == "j"
    assert envelope_task_id((ChildNode("child_0", "c", (TaskNode("z"),)),)) == "z"
    assert envelope_task_id((SignalNode("s", "s"),)) is None
    assert envelope_task_id((DelayNode("d", 1.0),)) is None
    route = RouteNode("branch_0", None, (("k", (TaskNode("h"),)),))
    with pytest.raises(ValueError, match=r"cannot end with route 'branch_0'"):
        envelope_task_id((route,))
