"""Secrets in contexts: sealed before storage, opened for agents only, scrubbed from what
agents say; never in plain text in events, read models, status results or exports."""

from __future__ import annotations

import hashlib
import json

import pytest

from actors import (
    execute_workflow_dag,
    get_execution_events,
    get_workflow_status,
    retry_failed_workflow,
    wait_for_workflow,
)
from events import EventStore
from events.secrets import SEALED, open_secrets
from tests.integration.helpers import register_chain, stage

pytestmark = pytest.mark.usefixtures("ray_session")

PASSWORD = "hunter2-correct-horse"
API_KEY = "sk-live-0123456789abcdef"
TOKEN = "tok-9f8e7d6c5b4a"


def _context(**extra: object) -> dict[str, object]:
    return {"organizationId": "org-sec", "password": PASSWORD,
            "credentials": {"api_key": API_KEY, "region": "eu"},
            "sessions": [{"token": TOKEN}], **extra}


async def _everything_stored(store: EventStore, eid: str) -> str:
    """Every byte wfdag keeps about the execution, as text."""
    async with store.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT metadata::text FROM workflow_events WHERE execution_id = $1::uuid", eid)
        row = await conn.fetchval(
            "SELECT row_to_json(e)::text FROM workflow_executions e WHERE id = $1::uuid", eid)
    status = (await get_workflow_status(eid)).model_dump_json()
    export = "\n".join(e.model_dump_json() for e in await get_execution_events(eid))
    return "\n".join([*(r[0] for r in events), row or "", status, export])


async def test_secrets_are_sealed_at_rest_and_opened_for_agents(store: EventStore) -> None:
    dag = await register_chain("secret", [stage("use", "secret_user")])
    eid = await execute_workflow_dag(dag.id, _context(), "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    stored = await _everything_stored(store, eid)
    for secret in (PASSWORD, API_KEY, TOKEN):
        assert secret not in stored
    # Sealed in place, the rest of the context as given.
    ctx = status.context
    # A secret-like key seals its whole value (``credentials``: the dict), at any depth
    # (``sessions[0].token``); other keys stay as given.
    assert set(ctx["password"]) == {SEALED} and set(ctx["credentials"]) == {SEALED}
    assert set(ctx["sessions"][0]["token"]) == {SEALED} and ctx["organizationId"] == "org-sec"
    assert open_secrets(ctx["password"]) == PASSWORD  # with the configured key, it opens
    assert open_secrets(ctx["credentials"]) == {"api_key": API_KEY, "region": "eu"}
    # The agent got the plain values, and what it echoed was masked before storage.
    output = status.executed_steps[0]["output"]
    assert output["digest"] == hashlib.sha256(f"{PASSWORD}|{API_KEY}".encode()).hexdigest()
    assert output["note"] == "signed in with ***"


async def test_a_secret_in_an_agent_error_is_masked_and_a_retry_still_opens_it(
    store: EventStore,
) -> None:
    dag = await register_chain("secret-fail", [stage("use", "secret_user")])
    eid = await execute_workflow_dag(dag.id, _context(fail=True), "tester")
    failed = await wait_for_workflow(eid, timeout=60)
    assert failed.status == "failed"
    assert failed.error_message is not None and "password ***" in failed.error_message
    assert PASSWORD not in await _everything_stored(store, eid)
    # The retry starts from the sealed context of the log: its runner opens it again.
    again = await retry_failed_workflow(eid, "tester")
    assert (await wait_for_workflow(again, timeout=60)).status == "failed"
    events = await get_execution_events(again)
    messages = json.dumps([e.model_dump(mode="json") for e in events])
    assert "login refused for password ***" in messages and PASSWORD not in messages


LEAKS = {"password": PASSWORD, "credentials": {"pin": 12345678}, "short_secret": "q~z",
         "db_pwd": "pg-pass-77", "dsn": "postgresql://app:dsn-pass-99@db.internal/app"}


def _forms() -> list[str]:
    import base64
    return [PASSWORD, PASSWORD[::-1], PASSWORD.upper(),
            base64.b64encode(PASSWORD.encode()).decode(), "12345678", "q~z", "pg-pass-77",
            "dsn-pass-99", "sk-invented-42424242"]


async def test_no_transform_of_a_secret_is_stored_and_invented_keys_are_sealed(
    store: EventStore,
) -> None:
    """The attack of issue 16: an agent echoes a numeric, a 3-character, a reversed, an
    upper-cased and a base64 secret, a ``db_pwd`` and a DSN's password, and invents a
    ``new_api_key``: none of it is in any stored row or export, and the next stage still gets
    the invented key in plain text."""
    import hashlib

    dag = await register_chain("leaky", [stage("leak", "leaky"), stage("next", "reads_invented")])
    eid = await execute_workflow_dag(dag.id, LEAKS, "tester")
    status = await wait_for_workflow(eid, timeout=60)
    assert status.status == "completed", status.error_message
    stored = await _everything_stored(store, eid)
    for form in _forms():
        assert form.casefold() not in stored.casefold(), form
    leak = status.executed_steps[0]["output"]
    assert set(leak["new_api_key"]) == {SEALED} and leak["pin"] == "***", leak
    final = status.executed_steps[1]["output"]
    assert final["digest"] == hashlib.sha256(b"sk-invented-42424242").hexdigest()


async def test_no_transform_of_a_secret_is_stored_from_an_error(store: EventStore) -> None:
    dag = await register_chain("leaky-fail", [stage("leak", "leaky")])
    eid = await execute_workflow_dag(dag.id, {**LEAKS, "fail": True},
                                     "tester")
    assert (await wait_for_workflow(eid, timeout=60)).status == "failed"
    stored = await _everything_stored(store, eid)
    assert "refused:" in stored
    for form in _forms()[:-1]:
        assert form.casefold() not in stored.casefold(), form
