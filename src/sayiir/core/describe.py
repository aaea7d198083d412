"""Text for an exception that cannot fail to be made, and that every backend can store.

A task's exception (or a codec's) is user code: its ``__str__`` may raise, its type may have
an odd ``__qualname__``, its message may hold NUL or lone surrogates, which PostgreSQL and
SQLite refuse to store. The engine never formats one with ``str(exc)`` or rebuilds it with
``type(exc)(...)``; it describes it with these helpers, so recording a failure cannot itself
fail (and leave the run stuck ``running``).
"""

from __future__ import annotations

__all__ = ["describe", "exc_text", "storable", "type_name"]

# What ``traceback`` prints for an exception whose ``__str__`` raises (the reference too).
STR_FAILED = "<exception str() failed>"


def exc_text(exc: BaseException) -> str:
    """``str(exc)``, or ``"<exception str() failed>"`` when that raises anything."""
    try:
        return str(exc)
    except BaseException:  # a broken __str__ may raise anything; formatting must not
        return STR_FAILED


def type_name(exc: BaseException) -> str:
    """The exception's ``__qualname__`` (what the reference shows), else its ``__name__``."""
    kind = type(exc)
    try:
        name = kind.__qualname__
        if isinstance(name, str):
            return name
    except BaseException:
        pass
    return kind.__name__


def describe(exc: BaseException) -> str:
    """``"<ExcType>: <message>"``, the error text of statuses and ``TaskError``; never raises."""
    return storable(f"{type_name(exc)}: {exc_text(exc)}")


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped (``\\x00``, ``\\ud800``).

    PostgreSQL text cannot hold NUL, and UTF-8 (every backend's encoding) cannot hold a
    lone surrogate: an error message with either would make storing the failure fail.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
