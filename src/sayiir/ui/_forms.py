"""The run list's view (filters, sort, page) to and from the URL's query string.

The whole view lives in the URL, so a link shares exactly what one operator sees:

>>> query = {"status": ["failed"], "workflow": ["orders"], "sort": ["updated_at"]}
>>> view = ListView.from_query(query)
>>> view.filter.status, view.filter.workflow_id, view.sort.column, view.sort.descending
(('failed',), 'orders', 'updated_at', True)
>>> view.query(cursor="abc")
'status=failed&workflow=orders&sort=updated_at&dir=desc&cursor=abc'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast
from urllib.parse import urlencode

from sayiir.core.queries import PUBLIC_STATUSES, SORT_COLUMNS, RunFilter, RunSort, SortColumn

__all__ = ["ListView", "parse_time"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def parse_time(text: str) -> datetime | None:
    """A ``datetime-local`` input (``2026-01-31T12:00``, read as UTC) or ISO text; ``None``
    when empty. Bad text raises ``ValueError`` naming it."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date and time: {text!r} (use 2026-01-31T12:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _first(query: Mapping[str, Sequence[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[0].strip()


@dataclass(frozen=True)
class ListView:
    """What the runs page shows: a filter, an order, a page (cursor) and its size."""

    filter: RunFilter = field(default_factory=RunFilter)
    sort: RunSort = field(default_factory=RunSort)
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT
    errors: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> ListView:
        """Parse the query string (``{name: [values]}``); bad values become ``errors``,
        shown on the page, and are ignored."""
        errors: list[str] = []
        statuses = tuple(s for s in query.get("status", []) if s)
        bad = [s for s in statuses if s not in PUBLIC_STATUSES]
        if bad:
            errors.append(f"unknown status {bad[0]!r}")
            statuses = tuple(s for s in statuses if s in PUBLIC_STATUSES)
        times: dict[str, datetime | None] = {}
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            try:
                times[name] = parse_time(_first(query, name))
            except ValueError as exc:
                errors.append(f"{name.replace('_', ' ')}: {exc}")
                times[name] = None
        run_filter = RunFilter(
            status=statuses,
            workflow_id=_first(query, "workflow") or None,
            instance_prefix=_first(query, "prefix") or None,
            failed_only=_first(query, "failed") in ("1", "on", "true"),
            **times,
        )
        column = _first(query, "sort") or "created_at"
        if column not in SORT_COLUMNS:
            errors.append(f"cannot sort by {column!r}")
            column = "created_at"
        descending = _first(query, "dir") != "asc"
        try:
            limit = int(_first(query, "limit") or DEFAULT_LIMIT)
        except ValueError:
            errors.append("limit must be a number")
            limit = DEFAULT_LIMIT
        return cls(
            filter=run_filter,
            sort=RunSort(cast(SortColumn, column), descending),
            cursor=_first(query, "cursor") or None,
            limit=max(1, min(limit, MAX_LIMIT)),
            errors=tuple(errors),
        )

    def params(self) -> list[tuple[str, str]]:
        """The query parameters of this view without its cursor (filters, then order)."""
        f = self.filter
        out = [("status", s) for s in f.status]
        if f.workflow_id:
            out.append(("workflow", f.workflow_id))
        if f.instance_prefix:
            out.append(("prefix", f.instance_prefix))
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            value = getattr(f, name)
            if value is not None:
                out.append((name, value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")))
        if f.failed_only:
            out.append(("failed", "1"))
        out += [("sort", self.sort.column), ("dir", "desc" if self.sort.descending else "asc")]
        if self.limit != DEFAULT_LIMIT:
            out.append(("limit", str(self.limit)))
        return out

    def query(self, *, cursor: str | None = None, **changes: str) -> str:
        """This view's query string, with a cursor and ``changes`` (``sort=..., dir=...``)."""
        params = [(k, v) for k, v in self.params() if k not in changes]
        params += list(changes.items())
        if cursor:
            params.append(("cursor", cursor))
        return urlencode(params)

    def sort_query(self, column: str) -> str:
        """The query of the same view sorted by ``column`` (toggling the direction if it is
        the current column), from the first page."""
        descending = not self.sort.descending if column == self.sort.column else True
        return self.query(sort=column, dir="desc" if descending else "asc")

    @property
    def filtered(self) -> bool:
        return self.filter != RunFilter()
