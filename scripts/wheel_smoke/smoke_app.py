"""The workflow the wheel smoke test submits and serves with `sayiir worker smoke_app:workflows`."""

from __future__ import annotations

from sayiir import Flow, task


@task
def add_one(x: int) -> int:
    return x + 1


@task
def double(x: int) -> int:
    return x * 2


@task
def square(x: int) -> int:
    return x * x


@task
def total(parts: dict[str, int]) -> int:
    return parts["double"] + parts["square"]


flow = Flow("wheel-smoke").then(add_one).fork().branch(double).branch(square).join(total).build()
workflows = [flow]


def expected(x: int) -> int:
    return 2 * (x + 1) + (x + 1) ** 2
