"""The runners: a warm pool of execution actors, each driving one execution at a time.

* :mod:`actors.runner.actor` — the Ray actor, with read-only methods only;
* :mod:`actors.runner.serve` — its serve loop: connect, claim, drive, release, reconnect;
* :mod:`actors.runner.drive` — one drive of one execution (fold, decide, dispatch, record);
* :mod:`actors.runner.dispatch` — stage attempts as Ray tasks or local threads, timeouts,
  cancellation, and retiring a process whose local thread must not run on;
* :mod:`actors.runner.attempt` — the body of one attempt (where the agent is called);
* :mod:`actors.runner.protocol` — the typed values they pass around;
* :mod:`actors.runner.pool` — the pool.
"""

from actors.runner.actor import PUBLIC_METHODS, ExecutionActor
from actors.runner.attempt import run_stage_attempt
from actors.runner.dispatch import RETIRE_EXIT_CODE, stage_task_options
from actors.runner.pool import ensure_pool, runner_name, runner_placement
from actors.runner.protocol import AttemptResult, AttemptSpec, DriveOutcome, StageOutcome

__all__ = [
    "PUBLIC_METHODS",
    "RETIRE_EXIT_CODE",
    "AttemptResult",
    "AttemptSpec",
    "DriveOutcome",
    "ExecutionActor",
    "StageOutcome",
    "ensure_pool",
    "run_stage_attempt",
    "runner_name",
    "runner_placement",
    "stage_task_options",
]
