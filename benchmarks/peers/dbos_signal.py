"""The other process of the DBOS signal workload: ``DBOSClient.send`` to every run.

Prints ``ready``, waits for ``go`` on stdin, sends message ``go`` (payload: the run's
index) to workflows ``<prefix>-0 .. <prefix>-<runs - 1>`` and prints ``done``.
"""

from __future__ import annotations

import argparse
import sys

from dbos import DBOSClient

from benchmarks.shapes import SIGNAL_NAME


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--runs", type=int, required=True)
    args = parser.parse_args(argv)
    client = DBOSClient(system_database_url=args.url)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    for i in range(args.runs):
        client.send(f"{args.prefix}-{i}", i, topic=SIGNAL_NAME)
    client.destroy()
    print("done", flush=True)


if __name__ == "__main__":
    main()
