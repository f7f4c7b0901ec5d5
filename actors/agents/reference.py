"""The five reference agents: deterministic work on the context, with sensible defaults.

Each runs any stage of its lifecycle domain with only the seed's example context
(``userId, organizationId, projectId``); richer context overrides the defaults:
``opportunities`` (opportunity), ``baselines`` and ``improvement_pct`` (target), ``kpi_targets``
and ``actuals`` (realization), ``investment`` (expansion).  The integrity agent signs the prior
outputs with HMAC-SHA256 under ``WFDAG_ATTESTATION_KEY`` (a fixed demo key when unset).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from actors.agents.artifacts import persist
from actors.agents.context import StageContext
from definitions import ValidationError
from events.artifacts import Artifact

__all__ = ["REFERENCE_AGENTS"]

_DEFAULT_BASELINES = {"revenue": 1_000_000.0, "operating_cost": 400_000.0, "nps": 30.0}
_LOWER_IS_BETTER = {"operating_cost", "churn_rate", "cost"}


def _unit(seed: str, salt: str) -> float:
    """A deterministic number in [0, 1) from a string."""
    digest = hashlib.sha256(f"{seed}|{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _project(ctx: StageContext) -> str:
    return str(ctx.context.get("projectId") or ctx.execution_id)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _from_inputs(ctx: StageContext, key: str) -> Any:
    for output in reversed(list(ctx.inputs.values())):
        if key in output:
            return output[key]
    return None


def opportunity_agent(ctx: StageContext) -> dict[str, Any]:
    seed = _project(ctx)
    raw = ctx.context.get("opportunities")
    if not isinstance(raw, list) or not raw:
        raw = [
            {"name": f"{segment} expansion", "market_size": round(2e6 + 8e6 * _unit(seed, segment)),
             "growth_pct": round(2 + 18 * _unit(seed, segment + "g"), 1),
             "fit": round(0.3 + 0.7 * _unit(seed, segment + "f"), 2)}
            for segment in ("enterprise", "mid-market", "self-serve")
        ]
    scored = []
    for item in raw:
        size = float(item.get("market_size", 0))
        growth = float(item.get("growth_pct", 0))
        fit = float(item.get("fit", 0))
        score = round(40 * min(size / 1e7, 1) + 30 * min(growth / 20, 1) + 30 * min(fit, 1), 2)
        scored.append({**item, "score": score, "feasible": score >= 35})
    ranked = sorted(scored, key=lambda o: (-o["score"], str(o.get("name"))))
    for rank, item in enumerate(ranked, start=1):
        item["rank"] = rank
    persist(ctx, [Artifact("opportunity", str(o.get("name", o["rank"])), o) for o in ranked])
    return {
        "opportunities": ranked,
        "top_opportunity": ranked[0].get("name"),
        "feasible_count": sum(1 for o in ranked if o["feasible"]),
        "stakeholders": [ctx.context.get("userId"), ctx.context.get("organizationId")],
    }


def target_agent(ctx: StageContext) -> dict[str, Any]:
    baselines = ctx.context.get("baselines") or _DEFAULT_BASELINES
    improvement = float(ctx.context.get("improvement_pct", 10.0))
    if improvement <= -100:
        raise ValidationError(f"improvement_pct {improvement} would make targets non-positive")
    targets = {}
    for kpi, base in baselines.items():
        factor = 1 - improvement / 100 if kpi in _LOWER_IS_BETTER else 1 + improvement / 100
        targets[kpi] = round(float(base) * factor, 2)
    committed = round(
        sum(abs(targets[k] - float(baselines[k])) for k in targets if k not in ("nps",)), 2
    )
    persist(ctx, [
        *[Artifact("kpi_target", kpi, {"baseline": baselines[kpi], "target": t})
          for kpi, t in targets.items()],
        Artifact("value_commit", "commitment", {"committed_value": committed}),
        Artifact("target", "target", {"kpi_targets": targets, "state": "committed"}),
    ])
    return {
        "kpi_targets": targets,
        "baselines": baselines,
        "approved": improvement <= 50,
        "committed_value": committed,
        "commitment_status": "committed",
        "metrics_instrumented": sorted(targets),
    }


def realization_agent(ctx: StageContext) -> dict[str, Any]:
    seed = _project(ctx)
    targets = ctx.context.get("kpi_targets") or _from_inputs(ctx, "kpi_targets")
    if not targets:
        targets = {k: round(v * 1.1, 2) for k, v in _DEFAULT_BASELINES.items()}
    actuals = ctx.context.get("actuals") or {
        kpi: round(float(t) * (1 + (_unit(seed, kpi) - 0.5) * 0.06), 2)
        for kpi, t in targets.items()
    }
    variance = {}
    for kpi, target in targets.items():
        if kpi in actuals and float(target) != 0:
            pct = (float(actuals[kpi]) - float(target)) / abs(float(target)) * 100
            variance[kpi] = round(-pct if kpi in _LOWER_IS_BETTER else pct, 2)
    worst = max((abs(v) for v in variance.values()), default=0.0)
    off = sorted(k for k, v in variance.items() if v < -10)
    persist(ctx, [Artifact("realization_report", ctx.stage_id,
                           {"variance_pct": variance, "max_abs_variance_pct": worst})])
    return {
        "kpi_targets": targets,
        "actuals": actuals,
        "variance_pct": variance,
        "max_abs_variance_pct": worst,
        "trend": "on_track" if worst <= 10 else "off_track",
        "report": f"{len(variance)} KPIs measured, worst variance {worst:.1f}%",
        "interventions": [{"kpi": k, "action": f"recovery plan for {k}"} for k in off],
    }


def expansion_agent(ctx: StageContext) -> dict[str, Any]:
    seed = _project(ctx)
    investment = float(ctx.context.get("investment", 250_000))
    scenarios = {}
    for name, mult in (("conservative", 0.8), ("base", 1.3), ("aggressive", 1.9)):
        gain = round(investment * mult * (0.9 + 0.2 * _unit(seed, name)), 2)
        roi = round((gain - investment) / investment * 100, 1)
        scenarios[name] = {"gain": gain, "roi_pct": roi}
    best = max(scenarios, key=lambda n: scenarios[n]["roi_pct"])
    persist(ctx, [Artifact("expansion_scenario", name, s) for name, s in scenarios.items()])
    return {
        "scenarios": scenarios,
        "recommended_scenario": "base" if scenarios["base"]["roi_pct"] > 0 else "conservative",
        "best_case": best,
        "roadmap": [
            {"phase": 1, "name": "pilot", "months": 3},
            {"phase": 2, "name": "rollout", "months": 6},
            {"phase": 3, "name": "scale", "months": 9},
        ],
    }


def integrity_agent(ctx: StageContext) -> dict[str, Any]:
    required = ("userId", "organizationId", "projectId")
    missing = [k for k in required if not ctx.context.get(k)]
    if missing:
        raise ValidationError(f"context lacks {', '.join(missing)} (integrity checks need them)")
    digests = {sid: hashlib.sha256(_canonical(out).encode()).hexdigest()
               for sid, out in sorted(ctx.inputs.items())}
    key = os.environ.get("WFDAG_ATTESTATION_KEY", "wfdag-reference-attestation").encode()
    message = _canonical({"execution_id": ctx.execution_id, "inputs": digests})
    signature = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
    persist(ctx, [Artifact("integrity_certificate", ctx.stage_id,
                           {"signature": signature, "inputs": digests})])
    return {
        "data_quality": {"checked_fields": list(required), "missing": []},
        "policies_passed": ["data-retention", "access-control", "audit-logging"],
        "audit_trail": [{"stage_id": sid, "sha256": d} for sid, d in digests.items()],
        "attestation": {"algorithm": "HMAC-SHA256", "signature": signature},
        "certified": True,
    }


REFERENCE_AGENTS = {
    "opportunity": opportunity_agent,
    "target": target_agent,
    "realization": realization_agent,
    "expansion": expansion_agent,
    "integrity": integrity_agent,
}
