"""A stage worker's socket and frames (issue 18), without Ray: a real Unix socket served by a
thread, as a worker's main thread serves it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from actors.runner.frames import (
    HEADER,
    Listener,
    frame,
    read_frame,
    result_from_json,
    result_to_json,
    spec_from_json,
    spec_to_json,
)
from actors.runner.protocol import AttemptResult, AttemptSpec

SPEC = AttemptSpec(
    execution_id="0b6f1a2c-0000-4000-8000-000000000001", workflow_id="wf", stage_id="s1",
    stage_name="S1", attempt=2, context={"k": [1, 2, {"x": None}]}, inputs={"s0": {"a": "é"}},
    idempotency_key="e:s1", agent="actors.agents.builtin:noop", capabilities=("http",),
    database_url="postgresql://u@h/db")


def test_a_spec_and_a_result_go_through_json_unchanged() -> None:
    assert spec_from_json(spec_to_json(SPEC)) == SPEC
    result = AttemptResult(ok=False, duration_ms=12, error={"type": "X", "message": "m",
                                                              "retryable": True,
                                                              "status_code": None}, pid=7)
    assert result_from_json(result_to_json(result)) == result


@pytest.mark.parametrize("answer", [
    b"[1, 2]", b'{"ok": true}',
    b'{"ok": true, "duration_ms": 1, "output": {}, "error": null, "pid": 1, "extra": 1}'])
def test_an_answer_that_is_not_a_result_is_refused(answer: bytes) -> None:
    with pytest.raises(ValueError, match="not a result"):
        result_from_json(answer)


def _serve(listener: Listener, ran: list[int], seen: list[AttemptSpec]) -> threading.Thread:
    def run(spec: AttemptSpec) -> AttemptResult:
        seen.append(spec)
        return AttemptResult(ok=True, duration_ms=1, output={"attempt": spec.attempt},
                             pid=os.getpid())

    thread = threading.Thread(target=lambda: ran.append(listener.serve(run, 10)), daemon=True)
    thread.start()
    return thread


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def test_the_socket_is_private_runs_attempts_in_order_and_is_gone_once_taken() -> None:
    listener = Listener()
    directory = Path(listener.path).parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # its user's only
    ran: list[int] = []
    seen: list[AttemptSpec] = []
    thread = _serve(listener, ran, seen)
    with _connect(listener.path) as sock:
        stream = sock.makefile("rwb")
        stream.write(frame(listener.token.encode()))
        for attempt in (1, 2, 3):
            stream.write(frame(spec_to_json(dataclasses.replace(SPEC, attempt=attempt))))
            stream.flush()
            answer = read_frame(stream)
            assert answer is not None
            assert result_from_json(answer).output == {"attempt": attempt}
        assert not Path(listener.path).exists()  # taken: nobody else can connect
        with pytest.raises(OSError):
            _connect(listener.path)
        stream.close()  # the runner hangs up: the worker's loop ends
    thread.join(10)
    assert ran == [3]
    assert [s.attempt for s in seen] == [1, 2, 3]


def test_a_connection_without_the_token_runs_nothing() -> None:
    listener = Listener()
    ran: list[int] = []
    seen: list[AttemptSpec] = []
    thread = _serve(listener, ran, seen)
    with _connect(listener.path) as sock:
        stream = sock.makefile("rwb")
        stream.write(frame(b"0" * 32))
        stream.write(frame(spec_to_json(SPEC)))
        stream.flush()
        assert stream.read(HEADER.size) == b""  # hung up on
    thread.join(10)
    assert ran == [0] and seen == []


def test_a_worker_nobody_connects_to_gives_up() -> None:
    listener = Listener()
    assert listener.serve(lambda spec: AttemptResult(ok=True, duration_ms=0), 0.2) == 0
    assert not Path(listener.path).parent.exists()


async def test_a_runner_refuses_an_answer_larger_than_any_result() -> None:
    """A worker runs agents' code: a header announcing gigabytes is not read (the worker is
    taken for lost), nor is an answer that is not a result."""
    from actors.runner.frames import MAX_FRAME
    from actors.runner.slots import Slot
    from actors.runner.workers import Worker, WorkerLostError

    for answer in (HEADER.pack(MAX_FRAME + 1), frame(b'{"not": "a result"}')):
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        ended: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        ended.set_result(0)
        worker = Worker(handle=None, pid=0, serving=ended, reader=reader, writer=writer,
                        slot=Slot(-1, 0))
        theirs.sendall(answer)
        with pytest.raises(WorkerLostError) as lost:
            await worker.call(SPEC)
        assert lost.value.type == "WorkerCrashedError"
        writer.close()
        theirs.close()
