"""Secrets in contexts: sealed (encrypted) before anything is stored, opened for agents only.

A context value under a secret-like key (``password``, ``secret``, ``token``, ``api_key``,
``authorization``, ``credentials``, … at any depth) is replaced, before the first event is
written, by ``{"$wfdag_secret": "<Fernet token>"}`` — the JSON of the value, encrypted and
authenticated (AES-128-CBC + HMAC-SHA256, from the well-kept ``cryptography`` package).  Events,
read models, status results and exports hold only that; the execution actor opens it for the
stage task that hands the context to an agent, so a restarted actor, reading the log, can too.

The key: ``WFDAG_SECRET_KEY`` (a Fernet key: ``python -c "from cryptography.fernet import
Fernet; print(Fernet.generate_key().decode())"``), else the key file ``$WFDAG_HOME/secret.key``,
generated (mode 0600) the first time a secret is sealed.  Every process of a cluster needs the
same key: set ``WFDAG_SECRET_KEY`` on every node (``wfdag.env``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken

from definitions import SecretKeyError
from events.database import wfdag_home

__all__ = [
    "SEALED",
    "SECRET_KEY_PATTERN",
    "Scrubber",
    "SecretKeyError",
    "is_secret_key",
    "open_secrets",
    "scrub",
    "seal_secrets",
    "secret_values",
]

#: A key is secret-like when one of these words ends at a word's end in it (``db_pwd``,
#: ``newApiKey``, ``PASSWORD``, ``credentials``), not inside a longer word (``passed``,
#: ``secretary``, ``tokens_used`` are not; plurals count, but ``tokens`` is a count).
SECRET_KEY_PATTERN = re.compile(
    r"(?:(?:pass(?:word|wd|phrase)?|pwd|secret|api[_-]?key|credential|private[_-]?key"
    r"|access[_-]?key|session[_-]?key|cookie|dsn)s?|token|authori[sz]ation)(?-i:(?![a-z]))",
    re.I,
)
SEALED = "$wfdag_secret"
MASK = "***"


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(SECRET_KEY_PATTERN.search(key))


_lock = threading.Lock()
_fernet: Fernet | None = None


def _key_file() -> Path:
    return wfdag_home() / "secret.key"


def _load(create: bool) -> Fernet:
    global _fernet
    with _lock:
        if _fernet is not None:
            return _fernet
        raw = os.environ.get("WFDAG_SECRET_KEY")
        source = "WFDAG_SECRET_KEY"
        if not raw:
            path = _key_file()
            source = str(path)
            if path.exists():
                raw = path.read_text().strip()
            elif create:
                path.parent.mkdir(parents=True, exist_ok=True)
                raw = Fernet.generate_key().decode()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(raw + "\n")
            else:
                raise SecretKeyError(
                    f"this execution's context holds sealed secrets but no key is configured: "
                    f"set WFDAG_SECRET_KEY (the same on every node) or provide {path}")
        try:
            _fernet = Fernet(raw.encode())
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"the secret key from {source} is not a Fernet key (32 url-safe base64 bytes); "
                f"generate one with cryptography.fernet.Fernet.generate_key()") from None
        return _fernet


def _is_sealed(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and SEALED in value


def seal_secrets(value: Any) -> Any:
    """A copy of ``value`` with every value under a secret-like key sealed (already sealed
    values are kept)."""
    if isinstance(value, dict):
        if _is_sealed(value):
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            if is_secret_key(key) and item is not None and not _is_sealed(item):
                token = _load(create=True).encrypt(json.dumps(item).encode()).decode()
                out[key] = {SEALED: token}
            else:
                out[key] = seal_secrets(item)
        return out
    if isinstance(value, list):
        return [seal_secrets(item) for item in value]
    return value


def open_secrets(value: Any) -> Any:
    """A copy of ``value`` with every sealed secret opened (for the agent, never for storage)."""
    if isinstance(value, dict):
        if _is_sealed(value):
            token = value[SEALED]
            try:
                return json.loads(_load(create=False).decrypt(str(token).encode()))
            except InvalidToken:
                raise SecretKeyError(
                    "a sealed secret does not open with the configured key: every process "
                    "must use the key the secret was sealed with (WFDAG_SECRET_KEY)") from None
        return {key: open_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [open_secrets(item) for item in value]
    return value


def has_sealed(value: Any) -> bool:
    if _is_sealed(value):
        return True
    if isinstance(value, dict):
        return any(has_sealed(v) for v in value.values())
    if isinstance(value, list):
        return any(has_sealed(v) for v in value)
    return False


def secret_values(opened: Any) -> list[str]:
    """The plain-text values under secret-like keys of an opened context (to scrub them from
    what agents say: error messages, outputs), longest first.  Numbers count (as their text);
    booleans and empty strings do not."""
    found: list[str] = []
    stack: list[tuple[Any, bool]] = [(opened, False)]
    while stack:
        item, secret = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, secret or is_secret_key(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, secret) for v in item)
        elif secret and item is not None and not isinstance(item, bool):
            text = str(item)
            if text.strip():
                found.append(text)
    return sorted(set(found), key=len, reverse=True)


#: A secret shorter than this is masked where a whole value (or a whole word) is it, not
#: inside other words (masking every "ab" in a text would hide the text, not the secret).
_SUBSTRING_MIN = 3
#: Encoded forms shorter than this are not searched for (too many false hits).
_ENCODED_MIN = 4
#: ``scheme://user:password@host``: the password part of any URL or DSN.
#: (Bounded repeats: linear in the text, whatever it holds.)
_URL_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s/@:]{0,256}:)(?P<pw>[^\s/@]{1,1024})@")


def _base64_cores(raw: bytes) -> list[str]:
    """What ``raw`` looks like inside any base64 text, at each of the three alignments it can
    start at: the characters that depend on its bytes only (both alphabets, no padding)."""
    cores: list[str] = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = (8 * offset + 5) // 6
        end = ((offset + len(raw)) * 8) // 6
        core = encoded[start:end]
        if len(core) >= _ENCODED_MIN:
            cores.extend({core, core.replace("+", "-").replace("/", "_")})
    return cores


def _forms(secret: str) -> list[str]:
    """The secret as it may be echoed: itself and reversed (matched ignoring case), and
    base64-, URL- and hex-encoded."""
    raw = secret.encode()
    forms = [secret, secret[::-1], quote(secret, safe=""), quote_plus(secret), raw.hex(),
             *_base64_cores(raw)]
    return [f for f in dict.fromkeys(forms) if f]


class Scrubber:
    """Masks the secrets it was built with, and the password of any URL, in what agents say."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = [s for s in dict.fromkeys(secrets) if s]
        self._whole = {s.casefold() for s in values}
        long_forms: list[str] = []
        short = []
        for secret in values:
            if len(secret) >= _SUBSTRING_MIN:
                long_forms.extend(_forms(secret))
            else:
                short.append(secret)
        parts = [re.escape(f) for f in sorted(set(long_forms), key=len, reverse=True)]
        parts.extend(rf"(?<!\w){re.escape(s)}(?!\w)" for s in short)
        self._pattern = re.compile("|".join(parts), re.I) if parts else None

    def text(self, value: str) -> str:
        if value.casefold() in self._whole:
            return MASK
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        if "://" not in value:
            return value
        return _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", value)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return MASK if str(value).casefold() in self._whole else value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of ``value`` with each secret masked wherever it appears: as a whole value (a
    number too), inside text (any case, reversed, base64-, URL- or hex-encoded), and the
    password of any URL or DSN."""
    return Scrubber(secrets)(value)
