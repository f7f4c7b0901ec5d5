"""The seed's workflow checks, reported as human-readable strings naming the stages."""

from __future__ import annotations

from collections import Counter

from definitions.agent_policy import agent_path_refusal
from definitions.compensation import BUILTIN_COMPENSATION_HANDLERS, is_valid_handler
from definitions.limits import MAX_NESTING, MAX_STAGES, MAX_TRANSITIONS
from definitions.models import ValidationResult, WorkflowDAG

__all__ = ["MAX_NESTING", "MAX_STAGES", "MAX_TRANSITIONS", "nested_deeper_than",
           "validate_workflow_dag"]



def nested_deeper_than(value: object, limit: int = MAX_NESTING) -> bool:
    """True when dicts/lists in ``value`` nest more than ``limit`` levels (iterative: safe on
    any depth)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _find_cycle(dag: WorkflowDAG) -> list[str] | None:
    """One cycle as a list of stage ids (first repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    colour = {stage.id: white for stage in dag.stages}
    for root in colour:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        iters = [iter(dag.outgoing(root))]
        colour[root] = grey
        while iters:
            step = next(iters[-1], None)
            if step is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            nxt = step.to_stage
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(dag.outgoing(nxt)))
    return None


def validate_workflow_dag(dag: WorkflowDAG) -> ValidationResult:
    """Check a parsed definition's graph; ``valid`` is false when any error is found.

    Errors: duplicate stage ids, a missing initial or final stage, a transition (or a
    condition) naming an unknown stage, a transition into the initial stage, a cycle (a stage
    waits for all its predecessors, so any cycle would deadlock).  Warnings: unreachable stages,
    duplicate transitions, a stage with no way on that is not a final stage.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if len(dag.stages) > MAX_STAGES or len(dag.transitions) > MAX_TRANSITIONS:
        return ValidationResult(valid=False, errors=[
            f"the workflow has {len(dag.stages)} stages and {len(dag.transitions)} transitions; "
            f"at most {MAX_STAGES} stages and {MAX_TRANSITIONS} transitions are allowed"],
            warnings=[])
    ids = [stage.id for stage in dag.stages]
    known = set(ids)

    for stage_id, count in Counter(ids).items():
        if count > 1:
            errors.append(f"stage id {stage_id!r} is defined {count} times")
    if dag.initial_stage not in known:
        errors.append(f"initial stage {dag.initial_stage!r} is not one of the stages")
    for final in dag.final_stages:
        if final not in known:
            errors.append(f"final stage {final!r} is not one of the stages")

    for index, transition in enumerate(dag.transitions):
        where = f"transition {index} ({transition.from_stage} -> {transition.to_stage})"
        if transition.from_stage not in known:
            errors.append(f"{where} starts at unknown stage {transition.from_stage!r}")
        if transition.to_stage not in known:
            errors.append(f"{where} leads to unknown stage {transition.to_stage!r}")
        if transition.to_stage == dag.initial_stage:
            errors.append(f"{where} leads back into the initial stage {dag.initial_stage!r}")
        condition = transition.condition
        if condition is not None and condition.stage is not None:
            if condition.stage not in known:
                errors.append(f"{where} has a condition on unknown stage {condition.stage!r}")
            elif transition.to_stage in known and condition.stage not in dag.ancestors(
                transition.to_stage
            ):
                errors.append(
                    f"{where} has a condition on stage {condition.stage!r}, which does not run "
                    f"before {transition.to_stage!r}"
                )

    for stage in dag.stages:
        handler = stage.compensation_handler
        if handler is not None and not is_valid_handler(handler):
            errors.append(
                f"stage {stage.id!r} names compensation handler {handler!r}, "
                f"which is neither a built-in handler nor an import path module:function"
            )
        elif handler is not None and handler not in BUILTIN_COMPENSATION_HANDLERS:
            refusal = agent_path_refusal(handler)
            if refusal is not None:
                errors.append(f"stage {stage.id!r}: compensation handler refused: {refusal}")
        if stage.agent is not None:
            refusal = agent_path_refusal(stage.agent)
            if refusal is not None:
                errors.append(f"stage {stage.id!r}: agent refused: {refusal}")

        if stage.workflow == dag.id:
            errors.append(f"stage {stage.id!r} starts workflow {dag.id!r} itself: a workflow "
                          f"stage's child would start another without end")

    pairs = Counter((t.from_stage, t.to_stage) for t in dag.transitions)
    for (source, target), count in pairs.items():
        if count > 1:
            warnings.append(f"transition {source} -> {target} is defined {count} times")

    cycle = _find_cycle(dag)
    if cycle is not None:
        errors.append(
            "cycle " + " -> ".join(cycle) + ": a stage waits for all its predecessors, "
            "so this would deadlock"
        )

    if dag.initial_stage in known:
        reachable = set(dag.reachable())
        for stage_id in ids:
            if stage_id not in reachable:
                warnings.append(
                    f"stage {stage_id!r} is unreachable from the initial stage and never runs"
                )
    finals = set(dag.final_stages)
    for stage_id in dict.fromkeys(ids):
        if not dag.outgoing(stage_id) and stage_id not in finals:
            warnings.append(f"stage {stage_id!r} has no outgoing transition but is not final")

    return ValidationResult(valid=not errors, errors=errors, warnings=warnings)
