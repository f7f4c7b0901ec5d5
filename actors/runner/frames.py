"""What a runner and its stage worker say to each other over the worker's private socket.

Frames are a 4-byte length and a JSON body: the worker's token first, then one attempt's spec
for one result, again and again.  JSON, not pickle, both ways: a worker runs agents' code, and
what it answers is read as data only.  Pure of Ray: the unit tests serve a socket with it.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable
from typing import Any

from actors.runner.protocol import AttemptResult, AttemptSpec

__all__ = [
    "ACCEPT_SECONDS",
    "HEADER",
    "MAX_FRAME",
    "Listener",
    "frame",
    "read_frame",
    "result_from_json",
    "result_to_json",
    "spec_from_json",
    "spec_to_json",
]

#: How long a new worker waits for its runner to connect before it gives up and ends.
ACCEPT_SECONDS = 60.0
HEADER = struct.Struct("!I")
#: The largest frame either side reads: far above a spec's or a result's size (payloads are
#: capped), far below what a runaway (or hostile) header could make the reader allocate.
MAX_FRAME = 64 * 2**20
_RESULT_KEYS = frozenset({"ok", "duration_ms", "output", "error", "pid"})


def spec_to_json(spec: AttemptSpec) -> bytes:
    return json.dumps({
        "execution_id": spec.execution_id, "workflow_id": spec.workflow_id,
        "stage_id": spec.stage_id, "stage_name": spec.stage_name, "attempt": spec.attempt,
        "context": spec.context, "inputs": spec.inputs,
        "idempotency_key": spec.idempotency_key, "agent_type": spec.agent_type,
        "agent": spec.agent, "capabilities": list(spec.capabilities),
        "database_url": spec.database_url, "handler": spec.handler, "output": spec.output,
    }, separators=(",", ":")).encode()


def spec_from_json(data: bytes) -> AttemptSpec:
    raw = json.loads(data)
    raw["capabilities"] = tuple(raw["capabilities"])
    return AttemptSpec(**raw)


def result_to_json(result: AttemptResult) -> bytes:
    return json.dumps({"ok": result.ok, "duration_ms": result.duration_ms,
                       "output": result.output, "error": result.error, "pid": result.pid},
                      separators=(",", ":")).encode()


def result_from_json(data: bytes) -> AttemptResult:
    """A worker's answer (``ValueError`` when it is not a result)."""
    raw = json.loads(data)
    if not isinstance(raw, dict) or set(raw) != _RESULT_KEYS:
        raise ValueError("a stage worker answered with something that is not a result")
    return AttemptResult(**raw)


def frame(data: bytes) -> bytes:
    return HEADER.pack(len(data)) + data


def read_frame(stream: Any) -> bytes | None:
    """The next frame of a blocking binary stream; None when it ends (or is not a frame)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        return None
    data = stream.read(size)
    return data if len(data) == size else None


class Listener:
    """A worker's private socket: in a directory only its user can open (``mkdtemp``), one
    connection taken, which must send the token first; unlinked once taken."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="wfdag-stage-")
        self.path = os.path.join(self._dir, "s")
        self.token = secrets.token_hex(16)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(1)

    def serve(self, run: Callable[[AttemptSpec], AttemptResult],
              accept_seconds: float = ACCEPT_SECONDS) -> int:
        """Take the one connection and run what comes over it, one attempt at a time, until
        it closes (or none comes in ``accept_seconds``, or it does not start with the token).
        Returns how many attempts ran."""
        ran = 0
        self._server.settimeout(accept_seconds)
        try:
            conn, _ = self._server.accept()
        except OSError:
            return 0
        finally:
            self._server.close()
            shutil.rmtree(self._dir, ignore_errors=True)  # nobody else can connect now
        with conn:
            conn.settimeout(None)
            stream = conn.makefile("rwb")
            token = read_frame(stream)
            if token is None or not hmac.compare_digest(token, self.token.encode()):
                return 0
            while (data := read_frame(stream)) is not None:
                stream.write(frame(result_to_json(run(spec_from_json(data)))))
                stream.flush()
                ran += 1
        return ran
