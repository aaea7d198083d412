"""Runs of every kind for the console's tests and screenshots, on any backend.

``populate(backend)`` runs real workflows to the states an operator meets: completed,
failed after retries (with a traceback), waiting for a signal, paused, cancelled, with
forks, routes, loops, a child workflow, and a payload that tries stored XSS.
"""

from __future__ import annotations

from typing import Any

from sayiir import Flow, LoopResult, RetryPolicy, run_durable_workflow, task
from sayiir.executor import cancel_workflow, pause_workflow

XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


@task("validate", retries=RetryPolicy(max_retries=2, initial_delay_secs=0.0))
def validate(order: dict[str, Any]) -> dict[str, Any]:
    if order.get("broken"):
        raise ValueError(f"order {order['id']} has no items")
    return order


def charge(order: dict[str, Any]) -> dict[str, Any]:
    return {"charged": order["total"]}


def reserve(order: dict[str, Any]) -> dict[str, Any]:
    return {"reserved": len(order.get("items", []))}


def merge(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in results.values():
        out.update(value)
    return out


def kind(approval: dict[str, Any]) -> str:
    return "gift" if approval.get("gift") else "plain"


def wrap(approval: dict[str, Any]) -> str:
    return "wrapped"


def box(approval: dict[str, Any]) -> str:
    return "boxed"


def poll(n: Any) -> LoopResult[int]:
    count = n if isinstance(n, int) else 0
    return LoopResult.done(count) if count >= 2 else LoopResult.again(count + 1)


def label(x: Any) -> str:
    return f"label for {x}"


SHIPPING = Flow("shipping").then(label, name="print_label").build()

ORDER = (
    Flow("order")
    .then(validate)
    .fork()
    .branch(charge)
    .branch(reserve)
    .join(merge)
    .wait_for_signal("approved")
    .route(kind, keys=["gift", "plain"])
    .branch("gift", wrap)
    .branch("plain", box)
    .done()
    .loop(poll, max_iterations=5)
    .then(SHIPPING)
    .build()
)

REPORT = (
    Flow("nightly-report")
    .then(lambda x: {"rows": x * 100}, name="extract")
    .then(lambda x: {**x, "ok": True}, name="load")
    .build()
)

WORKFLOWS = [ORDER, REPORT, SHIPPING]


def order(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"o-{i}", "total": 10 * i, "items": ["book"] * (i % 3 + 1), **extra}


def populate(backend: Any, n: int = 12) -> dict[str, str]:
    """Run demo workflows on ``backend``; return instance ids by role."""
    from sayiir.executor import resume_workflow, send_signal

    for i in range(n):
        run_durable_workflow(REPORT, f"report-{i:03d}", i, backend)
    for i in range(n):
        run_durable_workflow(ORDER, f"order-{i:03d}", order(i), backend)
    for i in range(0, n, 3):  # some orders approved and finished
        send_signal(f"order-{i:03d}", "approved", {"by": "alice", "gift": i % 2 == 0}, backend)
        resume_workflow(ORDER, f"order-{i:03d}", backend)
    run_durable_workflow(ORDER, "order-broken", order(99, broken=True), backend)
    run_durable_workflow(ORDER, "order-paused", order(7), backend)
    pause_workflow("order-paused", backend, reason="stock check", paused_by="ops")
    run_durable_workflow(ORDER, "order-cancelled", order(8), backend)
    cancel_workflow("order-cancelled", backend, reason="customer asked", cancelled_by="ops")
    run_durable_workflow(ORDER, "order-xss", order(5, note=XSS), backend)
    return {
        "waiting": "order-001",
        "completed": "order-000",
        "failed": "order-broken",
        "paused": "order-paused",
        "cancelled": "order-cancelled",
        "xss": "order-xss",
    }
