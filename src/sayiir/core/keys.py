"""Checkpoint keys: one per step occurrence, never shared by two steps; names stores accept.

A durable run stores each step's result under a key (``nodes`` has the formats): the
step's id, ``id#N`` for the N-th use of an id, ``id~timeout`` for a signal wait's
deadline, ``branch_N::key_fn`` for a route's decision, each behind ``loop_N@i/`` inside
a loop body. Ids may contain ``#``, ``~``, ``@``, ``/`` or ``:`` (the reference accepts
any text, and keys of runs in flight must not change), so instead of reserving
characters, ``build()`` computes every key of the workflow and refuses one in which two
steps would share a key (a task named ``go~timeout`` beside a wait for ``go`` with a
timeout), naming both: a shared key would make one step silently read the other's result.
"""

from __future__ import annotations

from dataclasses import replace

from sayiir.core.nodes import (
    Chain,
    ChildNode,
    DelayNode,
    ForkNode,
    LoopNode,
    Node,
    RouteNode,
    SignalNode,
    TaskNode,
    key_fn_id,
    occurrence_key,
    timeout_key,
    walk_nodes,
)

__all__ = ["assign_keys", "check_keys", "check_names", "unstorable"]

# Who stores a key: the node, and what of it ("step", or "timeout" for a wait's deadline).
_Owner = tuple[str, Node]
# Loop path (ids of the enclosing loops) -> {checkpoint key: the step that stores it}.
_Spaces = dict[tuple[str, ...], dict[str, _Owner]]
# Loop path -> ids of the loops directly in that scope.
_Loops = dict[tuple[str, ...], dict[str, None]]


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored by every backend (``None`` if it can).

    PostgreSQL text cannot hold NUL, and a lone surrogate has no UTF-8 form (SQLite and
    PostgreSQL fail to encode it): a run using such a name would be stranded mid-way.
    """
    if "\x00" in text:
        return "contains NUL (\\x00), which PostgreSQL cannot store"
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return (
            f"contains a lone surrogate ({text[exc.start]!r} at position {exc.start}), "
            "which has no UTF-8 form for SQLite or PostgreSQL"
        )
    return None


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        # The empty key names a run's "continue" entry in the worker queue.
        raise ValueError(f"{what} must not be empty")
    reason = unstorable(name)
    if reason is not None:
        raise ValueError(f"{what} {name!r} {reason}; use a name every backend can store")


def check_names(workflow_id: str, chain: Chain) -> None:
    """Refuse ids (and signal names) that are empty or that a backend cannot store."""
    _check_name("Workflow name", workflow_id)
    for node in walk_nodes(chain):
        if isinstance(node, TaskNode):
            _check_name("Task id", node.id)
        elif isinstance(node, DelayNode):
            _check_name("Delay id", node.id)
        elif isinstance(node, SignalNode):
            _check_name("Signal name", node.signal_name)
            _check_name("Signal wait id", node.id)
        elif isinstance(node, ChildNode):
            _check_name("Child workflow id", node.id)


# -- assigning keys ------------------------------------------------------------------------


def assign_keys(chain: Chain) -> Chain:
    """Give every task, delay and signal wait its checkpoint key, by position.

    The N-th use of an id (N >= 2, in definition order) is keyed ``id#N``, so a task
    used twice runs twice on the durable path too. Waits count across route branches
    (as they always did: keys of runs in flight must not change); tasks of different
    route branches count from the same point, since only one branch runs.
    """
    return _assign(chain, {}, {})


def _assign(chain: Chain, tasks: dict[str, int], waits: dict[str, int]) -> Chain:
    out: list[Node] = []
    for node in chain:
        if isinstance(node, TaskNode):
            node = _use(node, tasks)
        elif isinstance(node, DelayNode | SignalNode):
            waits[node.id] = count = waits.get(node.id, 0) + 1
            key = occurrence_key(node.id, count)
            if node.key != key:
                node = replace(node, key=key)
        elif isinstance(node, ForkNode):
            branches = tuple(_assign(b, tasks, waits) for b in node.branches)
            join = _use(node.join, tasks)
            if join is not node.join or not _same(branches, node.branches):
                node = replace(node, branches=branches, join=join)
        elif isinstance(node, RouteNode):
            node = _assign_route(node, tasks, waits)
        elif isinstance(node, LoopNode | ChildNode):
            body = _assign(node.body, tasks, waits)
            if body is not node.body:
                node = replace(node, body=body)
        out.append(node)
    result = tuple(out)
    return chain if _same(result, chain) else result


def _assign_route(node: RouteNode, tasks: dict[str, int], waits: dict[str, int]) -> RouteNode:
    """Tasks of each branch count from the same point; afterwards, from the highest count."""
    start, ends = dict(tasks), []
    branches: list[tuple[str, Chain]] = []
    for key, branch in node.branches:
        ends.append(dict(start))
        branches.append((key, _assign(branch, ends[-1], waits)))
    default = None
    if node.default is not None:
        ends.append(dict(start))
        default = _assign(node.default, ends[-1], waits)
    for end in ends:
        for task_id, count in end.items():
            tasks[task_id] = max(tasks.get(task_id, 0), count)
    changed = default is not node.default or any(
        new is not old for (_, new), (_, old) in zip(branches, node.branches, strict=True)
    )
    return replace(node, branches=tuple(branches), default=default) if changed else node


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _use(node: TaskNode, tasks: dict[str, int]) -> TaskNode:
    tasks[node.id] = count = tasks.get(node.id, 0) + 1
    key = occurrence_key(node.id, count)
    return node if node.key == key else replace(node, key=key)


# -- checking keys -------------------------------------------------------------------------


def check_keys(chain: Chain) -> None:
    """Refuse a workflow in which two steps would store their results under one key.

    Keys are compared per loop scope (``loop_N@i/`` is a prefix of the keys inside it), and
    no key may itself start like a loop scope of its own scope. Branches of one route may
    share keys with each other, since only one of them runs.
    """
    spaces: _Spaces = {}
    loops: _Loops = {}
    _walk(chain, (), spaces, loops)
    for path, ids in loops.items():
        for key, owner in spaces.get(path, {}).items():
            for loop_id in ids:
                if key.startswith(loop_id + "@"):
                    raise ValueError(
                        f"{_describe(owner)} has checkpoint key {key!r}, which starts like the "
                        f"keys of the steps of loop {loop_id!r} ({loop_id}@<iteration>/...): "
                        "it could read back one of their results; rename it"
                    )


def _walk(chain: Chain, path: tuple[str, ...], spaces: _Spaces, loops: _Loops) -> None:
    for node in chain:
        seen = spaces.setdefault(path, {})
        if isinstance(node, TaskNode | DelayNode):
            _claim(seen, node.key, ("step", node))
        elif isinstance(node, SignalNode):
            _claim(seen, node.key, ("step", node))
            if node.timeout_secs is not None:
                _claim(seen, timeout_key(node.key), ("timeout", node))
        elif isinstance(node, ForkNode):
            for branch in node.branches:
                _walk(branch, path, spaces, loops)
            _claim(seen, node.join.key, ("step", node.join))
        elif isinstance(node, RouteNode):
            _claim(seen, key_fn_id(node.id), ("step", node))
            _walk_route(node, path, spaces, loops)
        elif isinstance(node, LoopNode):
            loops.setdefault(path, {})[node.id] = None
            _walk(node.body, (*path, node.id), spaces, loops)
        else:
            _walk(node.body, path, spaces, loops)


def _walk_route(node: RouteNode, path: tuple[str, ...], spaces: _Spaces, loops: _Loops) -> None:
    """Each branch against the keys before the route; afterwards, the keys of all of them."""
    alternatives = [b for _, b in node.branches]
    if node.default is not None:
        alternatives.append(node.default)
    before = {p: dict(keys) for p, keys in spaces.items()}
    for branch in alternatives:
        local = {p: dict(keys) for p, keys in before.items()}
        _walk(branch, path, local, loops)
        for p, keys in local.items():
            spaces.setdefault(p, {}).update(keys)  # in place: callers hold these dicts


def _describe(owner: _Owner) -> str:
    what, node = owner
    if isinstance(node, SignalNode):
        wait = f"signal wait {node.id!r}"
        return f"the timeout of {wait}" if what == "timeout" else wait
    if isinstance(node, DelayNode):
        return f"delay {node.id!r}"
    if isinstance(node, RouteNode):
        return f"the key function of route {node.id!r}"
    assert isinstance(node, TaskNode)
    if node.key == node.id:
        return f"task {node.id!r}"
    n = int(node.key[len(node.id) + 1 :])
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"task {node.id!r} ({n}{suffix} use)"


def _claim(seen: dict[str, _Owner], key: str, owner: _Owner) -> None:
    first = seen.get(key)
    if first is not None:
        raise ValueError(
            f"{_describe(first)} and {_describe(owner)} would share the checkpoint key "
            f"{key!r}: a durable run would give one of them the other's stored result; "
            "rename one of them"
        )
    seen[key] = owner
