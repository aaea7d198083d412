"""The ```python blocks of a Markdown file, with the docs-test convention.

Every ```python block of README.md and docs/*.md runs (tests/docs/test_docs_code.py). A block
that cannot run (it needs a server the test cannot provide, it is an illustrative fragment) is
preceded, on the line right before its opening fence, by::

    <!-- docs-test: skip (reason) -->

The reason is required. A block that uses PostgreSQL (it names ``PostgresBackend``, psycopg or
``SAYIIR_DATABASE_URL``) runs only when the test has a server; it reads the URL from
``SAYIIR_DATABASE_URL``, as ``sayiir worker`` does. Other fences (```sh, ```text, ...) are
never run.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "MarkdownBlockError", "python_blocks"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip\s*(?:\((?P<reason>.*)\))?\s*$")
_POSTGRES = re.compile(r"PostgresBackend|psycopg|SAYIIR_DATABASE_URL")


class MarkdownBlockError(ValueError):
    """A docs-test marker that breaks the convention (no reason, nothing to apply to, ...)."""


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is, its code, and whether it is skipped."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str  # dedented, without the fences
    skip_reason: str | None = None

    @property
    def first_code_line(self) -> int:
        return self.line + 1

    @property
    def uses_postgres(self) -> bool:
        return _POSTGRES.search(self.code) is not None

    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def _is_python(info: str) -> bool:
    words = info.strip().split()
    return bool(words) and words[0].lower() in {"python", "py", "python3"}


def _skip_reason(path: Path, number: int, body: str) -> str:
    skip = _SKIP.match(body)
    if skip is None:
        raise MarkdownBlockError(
            f"{path.name}:{number}: unknown docs-test marker {body.strip()!r}; "
            "the only one is <!-- docs-test: skip (reason) -->"
        )
    reason = (skip.group("reason") or "").strip()
    if not reason:
        raise MarkdownBlockError(
            f"{path.name}:{number}: docs-test skip without a reason; "
            "write <!-- docs-test: skip (why this block cannot run) -->"
        )
    return reason


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of ``path`` in order; raises ``MarkdownBlockError`` on a bad marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (marker line, skip reason)
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        fence = _FENCE.match(lines[i])
        if pending is not None and fence is None:
            where = f"{path.name}:{pending[0]}"
            raise MarkdownBlockError(
                f"{where}: a docs-test marker must be on the line right before the opening "
                "fence of a ```python block"
            )
        if marker:
            pending = (i + 1, _skip_reason(path, i + 1, marker.group("body")))
            i += 1
            continue
        if fence is None:
            i += 1
            continue
        start, closing, indent = i, fence.group("fence"), fence.group("indent")
        i += 1
        while i < len(lines) and lines[i].strip() != closing:
            i += 1
        if i == len(lines):
            raise MarkdownBlockError(f"{path.name}:{start + 1}: code fence never closed")
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start + 1 : i]]
        i += 1  # past the closing fence
        if not _is_python(fence.group("info")):
            if pending is not None:
                raise MarkdownBlockError(
                    f"{path.name}:{pending[0]}: docs-test marker before a block that is not "
                    "```python (other blocks never run)"
                )
            continue
        code = textwrap.dedent("\n".join(body)) + "\n"
        blocks.append(Block(path, start + 1, code, pending[1] if pending else None))
        pending = None
    if pending is not None:
        raise MarkdownBlockError(
            f"{path.name}:{pending[0]}: docs-test marker at the end of the file"
        )
    return blocks
