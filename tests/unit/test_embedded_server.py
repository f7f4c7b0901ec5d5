"""The embedded default stops a server whose installation was deleted (a recreated
virtualenv), and leaves a healthy one alone.  A stand-in process plays the postmaster: what is
checked is which process gets stopped, from its ``postmaster.pid``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from events.database import _stop_if_its_install_is_gone

pytestmark = pytest.mark.skipif(not Path("/proc/self/exe").exists(), reason="needs /proc")


def _postmaster(tmp: Path, exe: Path) -> tuple[subprocess.Popen[bytes], Path]:
    proc = subprocess.Popen([str(exe), "60"])
    pgdata = tmp / "pgdata"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(f"{proc.pid}\n{pgdata}\n")
    return proc, pgdata


def test_a_server_whose_binaries_were_deleted_is_stopped(tmp_path: Path) -> None:
    exe = tmp_path / "postgres"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc, pgdata = _postmaster(tmp_path, exe)
    try:
        exe.unlink()  # the virtualenv it came from is gone
        _stop_if_its_install_is_gone(pgdata, timeout=0.5)
        assert proc.wait(timeout=10) != 0  # interrupted, not run to its end
    finally:
        proc.kill()


def test_a_server_whose_binaries_exist_is_left_running(tmp_path: Path) -> None:
    proc, pgdata = _postmaster(tmp_path, Path(shutil.which("sleep") or "/bin/sleep"))
    try:
        _stop_if_its_install_is_gone(pgdata, timeout=0.5)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
