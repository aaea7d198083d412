"""Output of the ``sayiir runs|workflows|stats`` commands: tables for people, JSON for tools.

``-o json`` prints one JSON document, ``-o jsonl`` one JSON object per line (runs, steps,
results), ``-o table`` a table: drawn with ``rich`` when the ``cli`` extra is installed,
else as plain aligned text. The JSON shapes are a stable contract (docs/console.md, pinned
by tests/cli/test_runs_cli.py): fields are only ever added, never renamed or removed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import Any, TextIO

__all__ = ["FORMATS", "Output", "jsonable", "progress"]

FORMATS = ("table", "json", "jsonl")


def jsonable(value: Any) -> Any:
    """Records as plain JSON values: dataclasses as objects, datetimes as ISO 8601 (UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _rich() -> Any:
    try:
        import rich.console
        import rich.markup
        import rich.table
    except ImportError:
        return None
    return rich


class Output:
    """Where a command writes, in the format asked for."""

    def __init__(self, fmt: str, out: TextIO | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.out = out if out is not None else sys.stdout

    def document(self, doc: Any, lines: Sequence[Any] | None = None) -> None:
        """``doc`` as JSON (``-o json``); ``lines`` (default: ``[doc]``) as JSON lines."""
        if self.fmt == "json":
            self.out.write(json.dumps(jsonable(doc), indent=2, sort_keys=True) + "\n")
        else:
            for item in lines if lines is not None else [doc]:
                self.out.write(json.dumps(jsonable(item), sort_keys=True) + "\n")

    def table(
        self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        cells = [["" if v is None else str(v) for v in row] for row in rows]
        rich = _rich()
        if rich is not None:
            console = rich.console.Console(file=self.out, soft_wrap=False)
            table = rich.table.Table(title=title, show_lines=False, highlight=False)
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in cells:
                # escape: stored text (errors, ids) is shown as it is, never as markup
                table.add_row(*(rich.markup.escape(c) for c in row))
            console.print(table)
            return
        if title:
            self.out.write(title + "\n")
        widths = [len(c) for c in columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        for row in [list(columns), ["-" * w for w in widths], *cells]:
            line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            self.out.write(line.rstrip() + "\n")

    def line(self, text: str) -> None:
        self.out.write(text + "\n")


@contextmanager
def progress(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (rich, on a terminal) for long bulk work; yields
    ``advance(n)``. Without rich, or off a terminal, or when not ``enabled``, it draws nothing."""
    rich = _rich()
    if not enabled or rich is None or not sys.stderr.isatty():
        yield lambda n: None
        return
    import rich.progress

    with rich.progress.Progress(
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TimeElapsedColumn(),
        console=rich.console.Console(file=sys.stderr),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
