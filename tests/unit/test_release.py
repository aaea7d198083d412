"""Release metadata: one version source, and a changelog in the Keep a Changelog shape.

The wheel itself is checked by ./scripts/wheel-smoke (CI): its file list, and that the
installed package reports this version.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import sayiir

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "the version lives in src/sayiir/_version.py"
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "src/sayiir/_version.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", sayiir.__version__)


def test_changelog_follows_keep_a_changelog() -> None:
    lines = (ROOT / "CHANGELOG.md").read_text().splitlines()
    assert lines[0] == "# Changelog"
    headings = [HEADING.match(line) for line in lines if line.startswith("## ")]
    assert all(headings), [line for line in lines if line.startswith("## ")]
    names = [m["name"] for m in headings if m is not None]
    assert names[0] == "Unreleased", "new entries go under ## [Unreleased], at the top"
    released = names[1:]
    for match in headings[1:]:
        assert match is not None and match["date"], f"{match and match['name']}: no date"
    versions = [_version_tuple(v) for v in released]
    assert versions == sorted(versions, reverse=True), "versions newest first"
    if versions:  # _version.py is never behind the newest released entry
        assert versions[0] <= _version_tuple(sayiir.__version__)
    categories = {line[4:] for line in lines if line.startswith("### ")}
    assert categories <= CATEGORIES, categories - CATEGORIES
