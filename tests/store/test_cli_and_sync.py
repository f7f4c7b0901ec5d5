"""The CLI's not-found and bad-input paths and the sync twins, on the test database, in this
process (or a plain child process): no Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from actors.cli import main
from tests.conftest import REPO


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("args", "message"), [
    (["status", str(uuid.uuid4())], "not found"),
    (["events", str(uuid.uuid4())], "not found"),
    (["replay", "not-a-uuid"], "not found"),
    (["run", "no-such-flow-v1"], "unknown workflow 'no-such-flow-v1'"),
    (["run", "opportunity-discovery-v1", "--version", "99"], "version 99"),
    (["breakers", "reset", "opportunity-discovery-v1", "nope"], "has no stage 'nope'"),
    (["metrics", "no-such-flow-v1"], "no-such-flow-v1"),
])
def test_what_does_not_exist_exits_3_naming_it(
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    # Ray may already be up in this process (an earlier test's session), so "did not start Ray"
    # is checked where it would happen: no module of the CLI or API may reach ensure_ray.
    reached: list[str] = []
    for name, module in list(sys.modules.items()):
        if name.startswith("actors") and hasattr(module, "ensure_ray"):
            monkeypatch.setattr(module, "ensure_ray", lambda *a, _n=name, **k: reached.append(_n))
    code, out, err = run(capsys, *args)
    assert code == 3, err
    assert message in err and "Traceback" not in err
    assert out == ""
    assert reached == [], f"a verb that fails on input must not start Ray (reached {reached})"


def test_replay_before_the_first_event_is_bad_input(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "replay", str(uuid.uuid4()), "--until", "0")
    assert code == 2 and "until_seq must be 1 or more" in err


def test_workflows_lists_json_with_every_canonical_one(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    code, out, _ = run(capsys, "workflows", "--json")
    assert code == 0
    ids = {w["id"] for w in json.loads(out)}
    assert {"opportunity-discovery-v1", "complete-value-lifecycle-v1"} <= ids


def test_the_sync_twins_close_their_pools_at_exit(database_url: str) -> None:
    """A script that used a blocking twin leaves no pool open when it exits (asyncpg warns
    about pools garbage-collected open)."""
    code = (
        "import atexit\n"
        "pools = []\n"
        "def check():\n"
        "    print('closed' if pools and all(p._closed for p in pools) else 'OPEN')\n"
        "atexit.register(check)  # registered first: runs after wfdag's own exit hook\n"
        "import actors\n"
        "from actors import runtime\n"
        "actors.list_circuit_breakers_sync()\n"
        "pools.extend(s.pool for d in runtime._stores.values() for s in d.values())\n")
    env = {**os.environ, "WFDAG_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", code],
                            cwd=REPO, env=env, text=True, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed", result.stderr
    assert "Traceback" not in result.stderr
