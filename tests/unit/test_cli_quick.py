"""`wfdag status`'s quick path (issue 18), in this process: which calls it takes, whose
service it trusts, what it prints.  No database, no Ray."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors.cli.quick import _service_console, _status_args, status_lines
from projections import WorkflowStatus


@pytest.mark.parametrize(("argv", "wanted"), [
    (["status", "E"], ("E", False, None)),
    (["status", "E", "--json"], ("E", True, None)),
    (["status", "--json", "E", "--org", "o1"], ("E", True, "o1")),
    (["status", "E", "--org=o1"], ("E", False, "o1")),
    (["status"], None),
    (["status", "E", "F"], None),
    (["status", "E", "--log-level", "INFO"], None),
    (["status", "E", "--database-url", "postgresql://x"], None),
    (["status", "E", "--org"], None),
    (["status", "E", "--help"], None),
    (["list"], None),
    ([], None),
])
def test_only_a_plain_status_call_takes_the_quick_path(
        argv: list[str], wanted: tuple[str, bool, str | None] | None) -> None:
    assert _status_args(argv) == wanted


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, pid: int, embedded: bool,
          url: str = "postgresql://db/one", console: str | None = "http://127.0.0.1:1/") -> None:
    monkeypatch.setenv("WFDAG_HOME", str(tmp_path))
    (tmp_path / "service.json").write_text(json.dumps({
        "pid": pid, "console_url": console, "embedded": embedded,
        "database_fingerprint": hashlib.sha256(url.encode()).hexdigest()[:16]}))
    (tmp_path / "console.token").write_text("tok\n")


def test_the_service_is_trusted_only_on_this_calls_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFDAG_DATABASE_URL", raising=False)
    _home(tmp_path, monkeypatch, pid=os.getpid(), embedded=True)
    assert _service_console() == ("http://127.0.0.1:1/", "tok")
    # This call names a database: the service's must be that one.
    monkeypatch.setenv("WFDAG_DATABASE_URL", "postgresql://db/one")
    _home(tmp_path, monkeypatch, pid=os.getpid(), embedded=False)
    assert _service_console() == ("http://127.0.0.1:1/", "tok")
    monkeypatch.setenv("WFDAG_DATABASE_URL", "postgresql://db/two")
    assert _service_console() is None
    # No URL here (the embedded default) and a service on a database of its own: not it.
    monkeypatch.delenv("WFDAG_DATABASE_URL")
    assert _service_console() is None
    # No console, a dead service, no record at all.
    _home(tmp_path, monkeypatch, pid=os.getpid(), embedded=True, console=None)
    assert _service_console() is None
    _home(tmp_path, monkeypatch, pid=2**22 + 12345, embedded=True)
    assert _service_console() is None
    (tmp_path / "service.json").unlink()
    assert _service_console() is None


def test_the_text_is_the_one_the_whole_command_line_printed() -> None:
    status = WorkflowStatus.model_validate({
        "execution_id": "e1", "workflow_id": "wf", "workflow_version": 2,
        "status": "waiting", "current_stage": "gate",
        "started_at": datetime(2026, 12, 4, 21, 0, 5, 120, tzinfo=UTC), "completed_at": None,
        "error_message": "boom",
        "audit_context": {"waiting": {"stages": ["gate"], "wake_at": None}},
        "parent": {"execution_id": "p1", "stage_id": "child"}, "children": {"c": "k1"},
        "context": {"executed_steps": [{"stage_id": "a"}, {"stage_id": "b"}]},
        "created_by": "u", "last_seq": 9})
    assert status_lines(json.loads(status.model_dump_json())) == [
        "e1", "workflow      wf v2", "status        waiting", "current stage gate",
        "started       2026-12-04 21:00:05.000120+00:00", "completed     -",
        "error         boom",
        "waiting on    gate (wakes on its own at no time: a request wakes it)",
        "parent        p1 (stage child)", "child         k1 (stage c)",
        "executed      2 stage(s): a, b"]
