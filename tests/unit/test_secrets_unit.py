"""Sealing and opening secrets (pure: no database, no Ray)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from events import secrets


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFDAG_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setattr(secrets, "_fernet", None)


def test_seal_replaces_values_under_secret_like_keys_at_any_depth() -> None:
    ctx = {"user": "ann", "Password": "p4ss-word", "deep": [{"x": {"API_KEY": [1, 2]}}],
           "authorization": None}
    sealed = secrets.seal_secrets(ctx)
    assert sealed["user"] == "ann" and sealed["authorization"] is None
    assert set(sealed["Password"]) == {secrets.SEALED}
    assert set(sealed["deep"][0]["x"]["API_KEY"]) == {secrets.SEALED}
    assert "p4ss-word" not in str(sealed)
    assert secrets.open_secrets(sealed) == ctx
    assert secrets.seal_secrets(sealed) == sealed  # sealing twice changes nothing


def test_a_wrong_key_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = secrets.seal_secrets({"token": "abcdef"})
    monkeypatch.setenv("WFDAG_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setattr(secrets, "_fernet", None)
    with pytest.raises(secrets.SecretKeyError, match="WFDAG_SECRET_KEY"):
        secrets.open_secrets(sealed)
    monkeypatch.setenv("WFDAG_SECRET_KEY", "not-a-key")
    monkeypatch.setattr(secrets, "_fernet", None)
    with pytest.raises(secrets.SecretKeyError, match="not a Fernet key"):
        secrets.seal_secrets({"token": "abcdef"})


def test_scrub_masks_secret_values_wherever_they_appear() -> None:
    opened = {"password": "hunter2-x", "creds": {"token": "tok-123456"}, "n": "publicvalue"}
    found = secrets.secret_values(opened)
    assert found == ["tok-123456", "hunter2-x"]
    said = {"msg": "auth hunter2-x failed", "list": ["tok-123456", "ok"], "n": 3}
    assert secrets.scrub(said, found) == {"msg": "auth *** failed", "list": ["***", "ok"], "n": 3}


def test_log_lines_redact_values_under_secret_like_keys_at_any_depth() -> None:
    from actors.logs import _redact_processor

    line = _redact_processor(None, "info", {
        "event": "execution.initiated", "execution_id": "e1",
        "context": {"user": "ann", "credentials": {"api_key": "sk-1"},
                    "items": [{"Authorization": "Bearer abc"}]},
        "password": "hunter2"})
    assert line["execution_id"] == "e1" and line["context"]["user"] == "ann"
    assert line["password"] == "***" and line["context"]["credentials"] == "***"
    assert line["context"]["items"][0]["Authorization"] == "***"
    assert "sk-1" not in str(line) and "hunter2" not in str(line) and "abc" not in str(line)
