"""Doctests of src/sayiir (collected with ``--doctest-modules``, see pyproject.toml).

Every docstring example runs in a fresh temporary directory, so examples that create a
SQLite file (``SqliteBackend("runs.db")``) leave nothing behind. Test fixtures live in
tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

# The `pytester` fixture: tests/testing/test_pytest_plugin.py runs pytest on small test files
# to check sayiir's own pytest plugin (only the root conftest may load a plugin this way).
pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _doctest_in_tmp_dir(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)
