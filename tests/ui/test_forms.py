"""The run list's view round-trips through the URL."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs

import pytest

from sayiir.ui._forms import ListView, parse_time


def test_a_view_survives_the_round_trip_through_its_query_string() -> None:
    query = {
        "status": ["failed", "paused"],
        "workflow": ["orders"],
        "prefix": ["ord-"],
        "created_after": ["2026-01-02T03:04"],
        "failed": ["1"],
        "sort": ["instance_id"],
        "dir": ["asc"],
        "limit": ["20"],
    }
    view = ListView.from_query(query)
    assert view.filter.status == ("failed", "paused")
    assert view.filter.created_after == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert view.filter.failed_only and not view.errors
    again = ListView.from_query(parse_qs(view.query()))
    assert again == view


def test_bad_values_are_reported_and_ignored() -> None:
    view = ListView.from_query(
        {"status": ["nope"], "sort": ["password"], "created_after": ["yesterday"]}
    )
    assert view.filter.status == () and view.sort.column == "created_at"
    assert len(view.errors) == 3
    assert any("yesterday" in e for e in view.errors)


def test_sorting_by_the_current_column_toggles_the_direction() -> None:
    view = ListView.from_query({"sort": ["updated_at"], "dir": ["desc"], "cursor": ["c"]})
    toggled = parse_qs(view.sort_query("updated_at"))
    assert toggled["dir"] == ["asc"] and "cursor" not in toggled
    assert parse_qs(view.sort_query("status"))["dir"] == ["desc"]


def test_limit_is_clamped() -> None:
    assert ListView.from_query({"limit": ["100000"]}).limit == 200
    assert ListView.from_query({"limit": ["0"]}).limit == 1


def test_parse_time() -> None:
    assert parse_time("") is None
    assert parse_time("2026-01-31T12:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="2026-01-31T12:00"):
        parse_time("31/01/2026")
