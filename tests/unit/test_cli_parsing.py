"""The CLI's parsing, global options and user errors, in this process: no database, no Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli import EXIT_CODES, build_parser, main
from tests.conftest import REPO


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("context", "message"), [
    ("{oops", "--context is not valid JSON"),
    ("[1, 2]", "--context must be a JSON object, got list"),
    ("@/nonexistent/ctx.json", "cannot read --context file /nonexistent/ctx.json"),
])
def test_a_bad_context_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], context: str, message: str
) -> None:
    code, out, err = run(capsys, "run", "opportunity-discovery-v1", "--context", context)
    assert code == 2
    assert message in err and out == ""
    assert "Traceback" not in err


def test_global_options_go_before_or_after_the_verb() -> None:
    parser = build_parser()
    before = parser.parse_args(["--org", "acme", "--json", "status", "x"])
    after = parser.parse_args(["status", "x", "--org", "acme", "--json"])
    for args in (before, after):
        assert (args.org, args.json, args.execution_id) == ("acme", True, "x")
    plain = parser.parse_args(["status", "x"])
    assert (plain.org, plain.json, plain.database_url, plain.log_level) == (None, False, None,
                                                                             None)


def test_bad_usage_exits_2_and_help_lists_the_exit_codes(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["run", "wf", "--version", "two"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {meaning}" in text
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("wfdag ")


def test_validate_names_problems_and_a_missing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": "b-v1", "name": "b", "version": 1, "initial_stage": "a",
                               "final_stages": ["a"], "stages": [
                                   {"id": "a", "name": "A", "agent_type": "target",
                                    "timeout_seconds": 0}]}))
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 1 and "stage 'a'.timeout_seconds" in err
    code, out, _ = run(capsys, "validate", str(bad), "--json")
    assert code == 1 and json.loads(out)[0]["valid"] is False
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("id: [unclosed")
    code, _, err = run(capsys, "validate", str(garbage))
    assert code == 2 and "is not valid YAML" in err


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`wfdag … | head -1`: the reader goes away early (more output than a pipe holds, so the
    writer meets a closed pipe); no BrokenPipeError trace."""
    many = tmp_path / "many.json"
    many.write_text(json.dumps([
        {"id": f"flow-{i:05d}-with-a-long-name-v1", "name": "n", "version": 1,
         "initial_stage": "a", "final_stages": ["a"],
         "stages": [{"id": "a", "name": "A", "agent_type": "target", "timeout_seconds": 5}]}
        for i in range(3000)]))
    result = subprocess.run(
        f"{sys.executable} -m actors.cli validate {many} | head -1",
        shell=True, cwd=REPO, text=True, capture_output=True, timeout=120, check=False)
    assert "flow-00000-with-a-long-name-v1" in result.stdout
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_validate_warns_of_agents_that_do_not_import_here_naming_the_stage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "id: imports-v1\nname: Imports\nversion: 1\ninitial_stage: here\n"
        "final_stages: [there]\nstages:\n"
        "  - {id: here, name: Here, agent: 'tests.agents:noop', timeout_seconds: 5,"
        " retry_config: NONE}\n"
        "  - {id: there, name: There, agent: 'only_on_workers.mod:run', timeout_seconds: 5,"
        " retry_config: NONE, compensation_handler: 'tests.agents:no_such_handler'}\n"
        "transitions:\n  - {from_stage: here, to_stage: there}\n")
    code, out, err = run(capsys, "validate", str(flow))
    assert code == 0, err  # a warning: the code may exist only on the workers
    assert "is valid" in out
    assert "stage 'there': agent 'only_on_workers.mod:run' does not import" in err
    assert "stage 'there': compensation handler 'tests.agents:no_such_handler'" in err
    assert "stage 'here'" not in err


def test_the_approval_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(REPO / "examples" / "approval-flow.yaml"))
    assert code == 0, err
    assert "target-value-commit-approval-v1' v1 is valid (6 stages" in out


@pytest.mark.parametrize(("stage", "message"), [
    ({"kind": "timer", "timeout_seconds": 5}, "give exactly one of delay_seconds or until"),
    ({"kind": "signal", "timeout_seconds": 5}, "name the signal it waits for"),
    ({"kind": "approval", "timeout_seconds": 5, "agent": "x:y"}, "it calls no agent"),
    ({"agent": "x:y", "timeout_seconds": 5, "signal": "s"}, "signal belongs to a signal stage"),
    ({"agent": "x:y", "timeout_seconds": 90_000}, "an agent's timeout_seconds is at most"),
    ({"kind": "workflow", "timeout_seconds": 5}, "name the child workflow it starts"),
    ({"kind": "workflow", "workflow": "w", "timeout_seconds": 5,
      "compensation_handler": "x:y"}, "it is undone by rolling its child back"),
    ({"agent": "x:y", "timeout_seconds": 5, "workflow": "w"}, "belongs to a workflow stage"),
    ({"kind": "workflow", "workflow": "k-v1", "timeout_seconds": 5},
     "starts workflow 'k-v1' itself"),
])
def test_each_kind_refuses_the_fields_of_another(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, stage: dict[str, object], message: str
) -> None:
    bad = tmp_path / "kind.json"
    bad.write_text(json.dumps({"id": "k-v1", "name": "k", "version": 1, "initial_stage": "a",
                               "final_stages": ["a"],
                               "stages": [{"id": "a", "name": "A", **stage}]}))
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 1 and message in err, err


@pytest.mark.parametrize(("args", "message"), [
    (["schedule", "create", "flow", "61 * * * *"], "is not valid"),
    (["schedule", "create", "flow", "* * * * *", "--timezone", "Nowhere/City"],
     "unknown time zone"),
    (["schedule", "create", "flow", "* * * * *", "--context", "[1]"],
     "--context must be a JSON object"),
    (["schedule", "create", "flow", "* * * * *", "--id", "has space"], "schedule_id must be"),
])
def test_schedule_input_errors_need_no_database(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str,
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err, err
    assert "Traceback" not in err
