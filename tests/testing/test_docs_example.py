"""docs/testing.md shows tests/testing/test_order_example.py in full: they never differ."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_example_is_the_tested_file() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    example = (ROOT / "tests" / "testing" / "test_order_example.py").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in doc
