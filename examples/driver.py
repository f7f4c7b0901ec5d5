"""An example wfdag driver: register a workflow of your own agents, start it, wait on it.

Against a Ray cluster (the database must be one every node reaches):

    RAY_ADDRESS=<head>:6379 WFDAG_DATABASE_URL=postgresql://… python examples/driver.py
    ray job submit --address http://<head>:8265 --working-dir examples \\
        --runtime-env-json '{"env_vars": {"WFDAG_DATABASE_URL": "postgresql://…"}}' \\
        -- python driver.py

Alone on one machine it starts a local Ray and the embedded PostgreSQL.  ``--no-wait`` prints
the execution id and exits: the execution carries on in the cluster's execution actors, and
``python driver.py --wait-for ID`` (or ``wfdag wait ID``) from any other driver follows it.
The last line on standard output is JSON: ``{"execution_id": …, "status": …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import ray

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import example_agents  # noqa: E402  (shipped to the workers below)

import actors  # noqa: E402
from actors.runtime import NAMESPACE  # noqa: E402

WORKFLOW = {
    "id": "example-lead-scoring-v1",
    "name": "Example: lead scoring",
    "version": 1,
    "initial_stage": "collect",
    "final_stages": ["report"],
    "stages": [
        {"id": "collect", "name": "Collect leads", "agent": "example_agents:collect_leads",
         "timeout_seconds": 60, "retry_config": "STANDARD"},
        {"id": "score", "name": "Score leads", "agent": "example_agents:score_leads",
         "timeout_seconds": 60, "retry_config": "STANDARD"},
        {"id": "report", "name": "Report", "agent": "example_agents:report",
         "timeout_seconds": 60, "retry_config": "STANDARD"},
    ],
    "transitions": [{"from_stage": "collect", "to_stage": "score"},
                    {"from_stage": "score", "to_stage": "report"}],
}


def connect() -> None:
    """Join the cluster with this driver's agent code on the workers.

    Under ``ray job submit --working-dir`` the job already ships this directory; run directly,
    the driver ships ``example_agents`` itself.  wfdag uses the connection made here (without
    one it connects by itself: ``RAY_ADDRESS``, else a local Ray)."""
    if os.environ.get("RAY_ADDRESS") and not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        ray.init(address=os.environ["RAY_ADDRESS"], namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"py_modules": [example_agents]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="start it, print its id, exit")
    parser.add_argument("--wait-for", metavar="ID", help="follow an execution started before")
    parser.add_argument("--stage-seconds", type=float, default=0.0,
                        help="how long each stage works (to watch it run)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    connect()
    actors.initialize_workflow_system_sync()
    if args.wait_for:
        execution_id = args.wait_for
    else:
        actors.register_workflow_sync(WORKFLOW)
        execution_id = actors.execute_workflow_dag_sync(
            WORKFLOW["id"], {"organizationId": "org-example", "userId": "driver",
                             "stage_seconds": args.stage_seconds}, "driver")
        print(f"started {execution_id}", file=sys.stderr)
    if args.no_wait:
        status = actors.get_workflow_status_sync(execution_id)
    else:
        status = actors.wait_for_workflow_sync(execution_id, timeout=args.timeout)
    print(json.dumps({"execution_id": execution_id, "status": status.status,
                      "error": status.error_message}))
    return 0 if status.status in ("completed", "queued", "initiated", "in_progress") else 1


if __name__ == "__main__":
    sys.exit(main())
