"""The settings of a ``PostgresBackend``, validated once when it is made.

Pool and session options (spec/postgres.md §1.7), the retry budget, the password source
and the psycopg parse cache; nothing here touches the database or imports psycopg.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sayiir.backends.postgres._conninfo import Target

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "Options",
    "check_password",
    "non_negative",
    "positive",
]

DEFAULT_CONNECT_TIMEOUT = 10

Password = str | Callable[[], str] | None


class Options:
    """Pool and session settings, validated once."""

    __slots__ = (
        "acquire_timeout",
        "idle_in_transaction_timeout",
        "max_idle",
        "max_lifetime",
        "max_size",
        "min_size",
        "statement_timeout",
    )

    def __init__(
        self,
        max_connections: int | None,
        min_connections: int | None,
        acquire_timeout_secs: float | None,
        idle_timeout_secs: float | None,
        max_lifetime_secs: float | None,
        statement_timeout_secs: float | None,
        idle_in_transaction_session_timeout_secs: float | None,
    ) -> None:
        self.max_size = positive("max_connections", max_connections, 10)
        self.min_size = positive("min_connections", min_connections, 1, zero=True)
        if self.min_size > self.max_size:
            if min_connections is None:
                self.min_size = self.max_size
            else:
                raise ValueError(
                    f"min_connections={self.min_size} is larger than "
                    f"max_connections={self.max_size}"
                )
        self.acquire_timeout = positive("acquire_timeout_secs", acquire_timeout_secs, 30.0)
        self.max_idle = positive("idle_timeout_secs", idle_timeout_secs, 600.0)
        self.max_lifetime = positive("max_lifetime_secs", max_lifetime_secs, 3600.0)
        self.statement_timeout = _positive_or_none("statement_timeout_secs", statement_timeout_secs)
        self.idle_in_transaction_timeout = _positive_or_none(
            "idle_in_transaction_session_timeout_secs", idle_in_transaction_session_timeout_secs
        )

    def session_options(self, given: str) -> str | None:
        """The libpq ``options`` of a pooled connection: ``given`` plus our ``-c`` settings
        (``None``: leave the URL's own ``options`` alone)."""
        settings = [given]
        if self.statement_timeout is not None:
            settings.append(f"-c statement_timeout={round(self.statement_timeout * 1000)}")
        if self.idle_in_transaction_timeout is not None:
            ms = round(self.idle_in_transaction_timeout * 1000)
            settings.append(f"-c idle_in_transaction_session_timeout={ms}")
        if not any(settings[1:]):
            return None
        return " ".join(s for s in settings if s)


def positive(name: str, value: float | None, default: float, *, zero: bool = False) -> Any:
    """``value`` (``default`` when ``None``) as the type of ``default``; refuses a
    non-number and a negative (or, unless ``zero``, a zero) value, naming ``name``."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'}, not {value!r}")
    return type(default)(value)


def _positive_or_none(name: str, value: float | None) -> float | None:
    return None if value is None else float(positive(name, value, 0.0))


def non_negative(name: str, value: float) -> float:
    """``value`` as a float; refuses a non-number, a negative number and NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")
    return float(value)


def check_password(password: Password, target: Target) -> Password:
    """``password=`` checked against the URL; a fixed one is redacted from then on."""
    if password is None:
        return None
    if not (isinstance(password, str) or callable(password)):
        raise TypeError(
            f"password must be a str or a function returning one, not {type(password).__name__}"
        )
    if target.has_password:
        raise ValueError(
            "the URL has a password and password= was given too: keep one of them "
            "(password= alone, for rotation)"
        )
    if isinstance(password, str):
        target.learn(password)
    return password
