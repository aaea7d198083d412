"""Griffe extension for the API reference: show docstring doctests as Python code.

Our docstrings are plain prose with ``>>>`` examples (run by doctest-minded readers, not
parsed into sections). Markdown would render ``>>> x`` as a quote and the output lines as
text (``['a', 'b']`` even as a link), so every doctest block (the ``>>>``/``...`` lines and
the output up to the next blank line) is wrapped in a ``pycon`` fence before rendering, and
``# doctest: +SKIP``-style flags are dropped from it. The docstrings themselves stay as they
are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_FLAGS = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    """Wrap each doctest block of ``text`` in a ```` ```pycon ```` fence."""
    out: list[str] = []
    in_block = False
    indent = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if not in_block and stripped.startswith(">>>"):
            in_block = True
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
        elif in_block and not stripped:
            out.append(f"{indent}```")
            in_block = False
        out.append(_FLAGS.sub("", line) if in_block else line)
    if in_block:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctests of every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
