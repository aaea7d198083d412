"""The other process of the signal workload: sends signal ``go`` to every run.

Started by a driver, it opens its own backend on the same database, prints ``ready``,
waits for ``go`` on stdin, sends ``go`` (payload: the run's index) to runs
``<prefix>-0 .. <prefix>-<runs - 1>``, optionally appends ``instance sent_at`` lines to
``--times`` and prints ``done``.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.peers.sayiir_run import make_backend
from benchmarks.shapes import SIGNAL_NAME
from sayiir import send_signal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--path", default="")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--times", default=None, help="file for 'instance sent_at' lines")
    args = parser.parse_args(argv)
    backend = make_backend(args.mode, args.url, args.path)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    lines = []
    for i in range(args.runs):
        instance = f"{args.prefix}-{i}"
        send_signal(instance, SIGNAL_NAME, i, backend)
        lines.append(f"{instance} {time.time():.6f}\n")
    if args.times:
        with open(args.times, "w") as out:
            out.writelines(lines)
    close = getattr(backend, "close", None)
    if close is not None:
        close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
