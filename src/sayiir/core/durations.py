"""Duration parsing shared by ``@task(timeout=...)``, ``Flow.delay`` and signal timeouts."""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["parse_duration", "to_seconds"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int) -> float:
    """Convert ``"30s"``, ``"5m"``, ``"1h"``, ``"100ms"`` or a number of seconds to seconds.

    >>> parse_duration("1.5m")
    90.0
    """
    if isinstance(value, bool):
        raise TypeError("duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2).lower()]
        raise ValueError(
            f'Invalid duration: "{value}". Expected a number (seconds) or a string like '
            '"30s", "5m", "1h", "100ms".'
        )
    raise TypeError(
        f"duration must be a number of seconds or a string like '30s', not {type(value).__name__}"
    )


def to_seconds(value: str | float | timedelta, what: str) -> float:
    """Seconds for a delay or signal timeout; rejects negative and non-finite values.

    ``what`` names the argument in the error (``"delay duration"``, ``"timeout"``).
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else parse_duration(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite non-negative number")
    return seconds
