"""Peer virtual environments under ``benchmarks/.venvs`` (gitignored), made on first use.

* ``ref``:  the reference engine, ``pip install sayiir==1.0.0``
* ``dbos``: ``pip install dbos`` (whatever version pip resolves; the run records it)

A stamp file holds the requirements; a venv whose stamp differs is rebuilt. Our own engine
runs in the interpreter that runs the suite (the repo's dev venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
PEERS: dict[str, list[str]] = {"ref": ["sayiir==1.0.0"], "dbos": ["dbos==3.4.0"]}


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure(name: str, log: Callable[[str], None] = print) -> tuple[Path | None, str]:
    """The peer's interpreter, or ``None`` and the reason it could not be set up."""
    requirements = PEERS[name]
    venv = VENVS / name
    stamp = venv / ".bench-stamp"
    want = "\n".join(requirements)
    if python_of(venv).exists() and stamp.exists() and stamp.read_text() == want:
        return python_of(venv), ""
    log(f"creating peer venv {venv.relative_to(ROOT.parent)} ({' '.join(requirements)})")
    shutil.rmtree(venv, ignore_errors=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    steps = [
        [_base_python(), "-m", "venv", str(venv)],
        [str(python_of(venv)), "-m", "pip", "install", "--quiet", *requirements],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"venv setup failed: {tail[0][:200]}"
    stamp.write_text(want)
    log(f"peer venv {name} ready")
    return python_of(venv), ""
