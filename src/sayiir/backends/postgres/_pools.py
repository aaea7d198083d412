"""The connections of one ``PostgresBackend``: the arguments of each new one, and its pools.

Two pools, each opened on first use: a sync ``ConnectionPool`` (``Storage``,
``QueueStorage``) and an ``AsyncConnectionPool`` (``AsyncStorage`` after ``connect`` or
``from_pool(AsyncConnectionPool)``), or the caller's own (``from_pool``), which we never
open or close.

A pool the backend opened serves only where it was opened: both pools their process, the
async pool also its event loop. Elsewhere (a forked child, a second ``asyncio.run``) a new
pool is opened and the old one is left alone: its connections belong to the parent
process, or to an event loop that has ended.

psycopg is imported inside methods only, so importing this module does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from sayiir.backends.postgres._options import DEFAULT_CONNECT_TIMEOUT, Options, Password
from sayiir.errors import BackendError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from sayiir.backends.postgres._conninfo import Target

__all__ = ["Pools"]


class Pools:
    """Connection arguments and pool lifecycles; ``label`` names the backend in errors."""

    def __init__(
        self,
        target: Target,
        options: Options,
        password: Password,
        label: str,
        foreign: ConnectionPool[Any] | AsyncConnectionPool[Any] | None = None,
        foreign_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.options = options
        self.label = label
        self.lock = threading.Lock()
        self.closed = False
        self._password = password
        self._foreign_kwargs = foreign_kwargs or {}
        self._sync: ConnectionPool[Any] | None = None
        self._async: AsyncConnectionPool[Any] | None = None
        self.owns_sync = self.owns_async = True
        if foreign is not None:
            from psycopg_pool import ConnectionPool

            if isinstance(foreign, ConnectionPool):
                self._sync, self.owns_sync = foreign, False
            else:
                self._async, self.owns_async = foreign, False
        self._pid = os.getpid()  # the process the owned pools belong to
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._alock: asyncio.Lock | None = None
        self._closing: asyncio.Task[None] | None = None

    # -- connection arguments --------------------------------------------------------------

    def pool_kwargs(self) -> dict[str, Any]:
        """Arguments of a pooled connection; the pools call this for each new connection."""
        params = self.target.params
        kwargs: dict[str, Any] = {**self._foreign_kwargs, "autocommit": True}
        self._add_password(kwargs)
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in params:
            kwargs["application_name"] = "sayiir"
        options = self.options.session_options(params.get("options", ""))
        if options is not None:
            kwargs["options"] = options
        return kwargs

    def direct_kwargs(self, remaining: float) -> dict[str, Any]:
        """Arguments of a first-contact connection: no session settings, and a connect
        timeout within the ``remaining`` seconds of the retry budget."""
        kwargs: dict[str, Any] = {**self._foreign_kwargs, "autocommit": True}
        self._add_password(kwargs)
        if "connect_timeout" not in self.target.params:
            left = max(1, round(remaining))
            kwargs.setdefault("connect_timeout", min(DEFAULT_CONNECT_TIMEOUT, left))
        return kwargs

    def listen_kwargs(self) -> dict[str, Any]:
        """Arguments of the LISTEN connection: a silently dead peer is noticed in ~25 s."""
        kwargs = self.pool_kwargs()
        if "keepalives" not in self.target.params:
            kwargs.update(keepalives=1, keepalives_idle=10, keepalives_interval=5,
                          keepalives_count=3)  # fmt: skip
        return kwargs

    def _add_password(self, kwargs: dict[str, Any]) -> None:
        """The current password from ``password=`` (never cached: it may have rotated)."""
        source = self._password
        if source is None:
            return
        if isinstance(source, str):
            kwargs["password"] = source
            return
        try:
            value = source()
        except Exception as exc:
            raise BackendError(
                f"the password function of {self.label} raised {type(exc).__name__}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise BackendError(
                f"the password function of {self.label} must return a non-empty str, "
                f"not {type(value).__name__}"
            )
        self.target.learn(value)
        kwargs["password"] = value

    def _pool_args(self) -> dict[str, Any]:
        opts = self.options
        return {
            # A function, not a dict: a password function is asked again for each connection.
            "kwargs": self.pool_kwargs,
            "min_size": opts.min_size,
            "max_size": opts.max_size,
            "timeout": opts.acquire_timeout,
            "max_idle": opts.max_idle,
            "max_lifetime": opts.max_lifetime,
            "name": f"sayiir@{self.target.where}",
            "open": False,
        }

    # -- the pools -------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise BackendError(f"{self.label} is closed")

    def _here(self) -> bool:
        """Still in the process that opened the owned pools (not a forked child)?"""
        if self._pid == os.getpid():
            return True
        # A forked child: the parent's pools are not ours to use, nor to close (closing a
        # connection tells the server to end the parent's session).
        self._pid = os.getpid()
        if self.owns_sync:
            self._sync = None
        if self.owns_async:
            self._async = self._aloop = self._alock = None
        return False

    def foreign_sync(self) -> ConnectionPool[Any] | None:
        """The caller's sync pool (``from_pool``), if any."""
        return None if self.owns_sync else self._sync

    def foreign_async(self) -> AsyncConnectionPool[Any] | None:
        """The caller's async pool (``from_pool``), if any."""
        return None if self.owns_async else self._async

    def sync_hot(self) -> ConnectionPool[Any] | None:
        """The sync pool, if it is open and may be used here."""
        pool = self._sync
        if pool is not None and (not self.owns_sync or self._here()):
            return pool
        return None

    def async_hot(self) -> AsyncConnectionPool[Any] | None:
        """The async pool, if it is open and may be used here (on this event loop)."""
        pool = self._async
        if pool is not None and (
            not self.owns_async or (self._here() and _running_loop() is self._aloop)
        ):
            return pool
        return None

    def sync_pool(self) -> ConnectionPool[Any]:
        """The sync pool, opened now if needed; call with ``lock`` held."""
        self.check_open()
        pool = self.sync_hot()
        if pool is None:
            from psycopg_pool import ConnectionPool

            pool = ConnectionPool(self.target.conninfo, **self._pool_args())
            pool.open(wait=False)
            self._sync = pool
        return pool

    def async_lock(self) -> asyncio.Lock:
        """The lock of the running event loop. An owned async pool belongs to the loop that
        opened it: on another loop it is dropped here, and ``async_pool`` opens a new one."""
        self.check_open()
        self._here()
        loop = asyncio.get_running_loop()
        if self._alock is None or self._aloop is not loop:
            self._alock, self._aloop = asyncio.Lock(), loop
            if self.owns_async and self._async is not None:
                _drop_idle_connections(self._async)
                self._async = None
        return self._alock

    async def async_pool(self) -> AsyncConnectionPool[Any]:
        """The async pool, opened now if needed; call with ``async_lock()`` held."""
        self.check_open()
        pool = self._async
        if pool is None:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(self.target.conninfo, **self._pool_args())
            await pool.open(wait=False)
            self._async = pool
        return pool

    def check(self) -> None:
        """Drop the dead connections of the owned sync pool (after a server restart)."""
        import psycopg

        pool = self._sync
        if pool is not None and self.owns_sync:
            with contextlib.suppress(psycopg.Error):
                pool.check()

    async def acheck(self) -> None:
        """``check`` for the owned async pool."""
        import psycopg

        pool = self._async
        if pool is not None and self.owns_async:
            with contextlib.suppress(psycopg.Error):
                await pool.check()

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the owned pools (never a pool given to ``from_pool``)."""
        self.closed = True
        here = self._here()
        pool, self._sync = self._sync, None
        if pool is not None and self.owns_sync and here:
            pool.close()
        closing = self._close_async(here)
        if closing is not None:
            # Called from async code on the pool's loop: finish closing in the background
            # (the reference keeps the task alive until it is done).
            self._closing = asyncio.get_running_loop().create_task(closing)

    async def aclose(self) -> None:
        """``close`` from async code."""
        self.closed = True
        here = self._here()
        closing = self._close_async(here)
        if closing is not None:
            await closing
        pool, self._sync = self._sync, None
        if pool is not None and self.owns_sync and here:
            await asyncio.to_thread(pool.close)

    def _close_async(self, here: bool) -> Coroutine[Any, Any, None] | None:
        """Close the owned async pool, or return the coroutine that closes it when we run
        on its event loop (the caller awaits it or makes it a task)."""
        apool, self._async = self._async, None
        if apool is None or not self.owns_async or not here:
            return None
        loop, running = self._aloop, _running_loop()
        if running is not None and running is loop:
            return apool.close()
        if running is None and loop is not None and not (loop.is_closed() or loop.is_running()):
            loop.run_until_complete(apool.close())
        else:
            _drop_idle_connections(apool)
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _drop_idle_connections(pool: AsyncConnectionPool[Any]) -> None:
    """Close the idle connections of an async pool whose event loop has ended.

    ``asyncio.run`` closes its loop when it returns; a pool opened there can no longer be
    closed with ``await pool.close()``. Its idle connections are closed at the socket level
    instead (psycopg_pool keeps them in ``_pool``; if that ever changes, they are closed by
    garbage collection, as before).
    """
    for conn in list(getattr(pool, "_pool", ())):
        with contextlib.suppress(Exception):
            conn.pgconn.finish()
