"""A fork-safe engine (issue 10, item 9): a process forked while another thread runs fork
branches (``os.fork``, multiprocessing's ``fork`` start method, gunicorn ``--preload``) gets
a working branch pool, not the parent's threads, slots and locks, which do not exist or may
be held in the child. Real forks, in a separate process (``fork_child.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("fork_child.py")


@pytest.mark.parametrize(
    ("mode", "runs"), [("os.fork", 20), ("multiprocessing", 8), ("tracing", 20)]
)
def test_fork_branches_run_side_by_side_in_a_forked_child(mode, runs):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), mode], capture_output=True, text=True, timeout=115
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.split() == ["OK", str(runs)], (done.stdout, done.stderr)
