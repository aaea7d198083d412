"""Workflows the child-process crash test runs (imported by the child as ``childflows``).

Each task appends a line to the ledger file named in the input: the parent reads
which tasks really ran, in which process lifetime.
"""

from __future__ import annotations

from typing import Any

from sayiir import Flow, task


def _note(order: dict[str, Any], name: str) -> None:
    with open(order["ledger"], "a", encoding="utf-8") as f:
        f.write(name + "\n")


@task
def charge(order: dict[str, Any]) -> dict[str, Any]:
    _note(order, "charge")
    return {**order, "charged": True}


@task
def ship(order: dict[str, Any]) -> str:
    _note(order, "ship")
    return f"shipped {order['total']}"


order = Flow("child-order").then(charge).then(ship).build()
