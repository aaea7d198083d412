"""Quick start: a durable order workflow on the embedded SQLite backend.

Run it with ``./scripts/example``. It shows what sayiir is for:

1. a workflow of ordinary functions (a fork, a retry, a durable delay, a signal);
2. a durable run: every finished task is checkpointed in ``quickstart.db``;
3. the run parks on the delay and on the approval signal without any process
   waiting, and ``resume_workflow`` picks it up from its last checkpoint;
4. the same workflow run in memory, without a backend.

Run it twice: the second run finds the first one's instance in the database
and shows it instead of starting again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sayiir import (
    Flow,
    RetryPolicy,
    SqliteBackend,
    get_task_context,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    send_signal,
    task,
)

attempts = {"reserve": 0}


@task
def validate(order: dict) -> dict:
    if order["qty"] <= 0:
        raise ValueError("quantity must be positive")
    return {**order, "total": order["qty"] * order["price"]}


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.1))
def reserve_stock(order: dict) -> str:
    attempts["reserve"] += 1
    if attempts["reserve"] == 1:
        raise ConnectionError("warehouse API timed out")  # retried after 0.1 s
    return f"reserved {order['qty']} x {order['sku']}"


@task
def charge_card(order: dict) -> str:
    return f"charged {order['total']:.2f} EUR"


@task
def confirm(results: dict) -> str:
    # The join receives {"reserve_stock": ..., "charge_card": ...}.
    return f"{results['reserve_stock']}; {results['charge_card']}"


@task
def ship(approval: dict) -> str:
    # After wait_for_signal, the next task receives the signal's payload.
    ctx = get_task_context()
    assert ctx is not None
    return f"shipped order {ctx.instance_id} (approved by {approval['by']})"


workflow = (
    Flow("order")
    .then(validate)
    .fork()
    .branch(reserve_stock)
    .branch(charge_card)
    .join(confirm)
    .delay("cool_off", "1s")
    .wait_for_signal("approval", timeout="1h")
    .then(ship)
    .build()
)


def main() -> None:
    db = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart.db")
    order = {"sku": "BOOK-42", "qty": 2, "price": 19.5}

    print("in memory, no checkpoints (delay and signal need a durable run):")
    quick = Flow("order-check").then(validate).then(charge_card).build()
    print("  ", run_workflow(quick, order))

    with SqliteBackend(str(db)) as backend:
        instance = "order-1001"
        status = run_durable_workflow(
            workflow, instance, order, backend=backend, conflict_policy="use_existing"
        )
        print(f"durable run in {db} -> {status.status}")
        if status.is_completed():
            print("   already completed by an earlier run:", status.output)
            print(f"   (delete {db} to start over)")
            return
        print(f"   parked on delay {status.delay_id!r} until {status.wake_at}")

        time.sleep(1.1)
        status = resume_workflow(workflow, instance, backend)
        print(f"resumed after the delay -> {status.status} (signal {status.signal_name!r})")

        send_signal(instance, "approval", {"by": "alice"}, backend)
        status = resume_workflow(workflow, instance, backend)
        print(f"signal sent, resumed -> {status.status}")
        print("   output:", status.output)
        print(f"   warehouse call attempts: {attempts['reserve']} (one retry)")


if __name__ == "__main__":
    main()
