"""Sealing and opening secrets (pure: no database, no Ray)."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("key", ["password", "Passwords", "db_pwd", "passwd", "dsn",
                                 "DATABASE_DSN", "secret", "client_secrets", "credential",
                                 "private_key", "new_api_key", "newApiKey", "token",
                                 "authorization", "session-key", "cookies"])
def test_secret_like_keys(key: str) -> None:
    assert secrets.is_secret_key(key)


@pytest.mark.parametrize("key", ["policies_passed", "passes", "secretary", "tokens_used",
                                 "tokens", "user", "description", "dsnake"])
def test_words_that_only_contain_a_secret_word_are_not_secret_keys(key: str) -> None:
    assert not secrets.is_secret_key(key)


def test_scrub_catches_the_transforms_of_issue_16() -> None:
    import base64
    from urllib.parse import quote

    pw = "Hunter2-pw!"
    found = secrets.secret_values({"password": pw, "pin": {"token": 12345678},
                                   "short": {"secret": "k9x"}})
    assert set(found) == {pw, "12345678", "k9x"}
    said = {
        "echo": 12345678, "as_text": "pin 12345678 ok", "short": "k9x", "in_words": "a k9x b",
        "reversed": pw[::-1], "upper": pw.upper(), "lower": f"x{pw.lower()}y",
        "b64": base64.b64encode(pw.encode()).decode(),
        "basic": "Basic " + base64.b64encode(f"ann:{pw}".encode()).decode(),
        "b64url": base64.urlsafe_b64encode(b"zz" + pw.encode()).decode(),
        "url": f"https://x.test/?p={quote(pw, safe='')}",
        "dsn": f"postgresql://ann:{pw}@db.internal/app",
        "other_dsn": "mysql://bob:not-a-known-secret@h/db",
        "hex": pw.encode().hex(),
    }
    scrubbed = secrets.scrub(said, found)
    text = json.dumps(scrubbed)
    for piece in (pw, pw[::-1], "12345678", "k9x", "not-a-known-secret", said["b64"],
                  said["hex"], quote(pw, safe="")):
        assert piece.casefold() not in text.casefold(), (piece, scrubbed)
    assert "***" in scrubbed["basic"] and "***" in scrubbed["b64url"], scrubbed
    assert scrubbed["dsn"] == "postgresql://ann:***@db.internal/app"
    assert scrubbed["echo"] == "***"
    # a secret of one or two characters is masked as a whole word, not inside other words
    assert secrets.scrub({"a": "abab", "b": "x ab y", "c": "ab"}, ["ab"]) == {
        "a": "abab", "b": "x *** y", "c": "***"}


def test_an_agent_invented_secret_key_is_found_for_sealing() -> None:
    output = {"account": "a-1", "new_api_key": "sk-live-abcdef", "n": [{"db_pwd": "pw"}]}
    assert set(secrets.secret_values(output)) == {"sk-live-abcdef", "pw"}
    sealed = secrets.seal_secrets(output)
    assert "sk-live-abcdef" not in json.dumps(sealed) and sealed["account"] == "a-1"
    assert secrets.open_secrets(sealed) == output


def test_a_printed_stage_context_shows_no_secret() -> None:
    from actors.agents import StageContext

    ctx = StageContext(execution_id="e", workflow_id="w", stage_id="s", attempt=1,
                       context={"user": "ann", "password": "hunter2-opened",
                                "nested": {"api_key": "sk-1"}},
                       inputs={"up": {"new_token": "tok-9"}}, idempotency_key="k")
    for text in (repr(ctx), str(ctx), f"{ctx}"):
        assert "ann" in text and "***" in text
        assert not any(s in text for s in ("hunter2-opened", "sk-1", "tok-9")), text
