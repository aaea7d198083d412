"""Run the code blocks of one Markdown file in order, in this (fresh) process.

Used by tests/docs/test_docs_code.py: ``python run_blocks.py RESULT.json`` reads the blocks as
JSON on stdin (``[{"path", "line", "code"}, ...]``), runs them in one namespace, as a reader
pasting them one after the other into a ``python -m asyncio`` session would (top-level
``await`` works; one event loop serves every block). Each block is compiled under the Markdown
file's path with its own line numbers, so a traceback points at the documentation line. On the
first failure it writes ``{"block": index, "traceback": text}`` to RESULT.json and exits 1.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any


def main() -> int:
    result = Path(sys.argv[1])
    blocks: list[dict[str, Any]] = json.load(sys.stdin)
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    loop: asyncio.AbstractEventLoop | None = None
    for index, block in enumerate(blocks):
        try:
            # Padded with blank lines: line N of the code is line N of the Markdown file.
            source = "\n" * int(block["line"]) + block["code"]
            code = compile(source, block["path"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if code.co_flags & inspect.CO_COROUTINE:
                if loop is None:
                    loop = asyncio.new_event_loop()
                    asyncio.set_event_loop(loop)
                loop.run_until_complete(eval(code, namespace))
            else:
                exec(code, namespace)
        except BaseException as exc:
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # without this frame
            text = "".join(traceback.format_exception(type(exc), exc, tb))
            result.write_text(json.dumps({"block": index, "traceback": text}))
            return 1
    if loop is not None:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    result.write_text(json.dumps({"block": None, "traceback": ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
