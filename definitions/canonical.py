"""The seven canonical workflows of the seed, with its ids, names, order and timeouts."""

from __future__ import annotations

import itertools
from typing import Any

from definitions.models import WorkflowDAG

__all__ = ["CANONICAL_WORKFLOWS", "INTERVENTION_VARIANCE_THRESHOLD_PCT", "canonical_workflows"]

INTERVENTION_VARIANCE_THRESHOLD_PCT = 10.0
"""Intervention Planning runs when Performance Analysis finds a KPI this far off target."""


def _stage(
    stage_id: str,
    name: str,
    agent_type: str,
    timeout: int,
    retry: str,
    handler: str,
    capabilities: list[str],
) -> dict[str, Any]:
    return {
        "id": stage_id,
        "name": name,
        "agent_type": agent_type,
        "timeout_seconds": timeout,
        "retry_config": retry,
        "compensation_handler": handler,
        "capabilities": capabilities,
    }


def _chain(ids: list[str]) -> list[dict[str, Any]]:
    return [{"from_stage": a, "to_stage": b} for a, b in itertools.pairwise(ids)]


def _workflow(
    workflow_id: str, name: str, description: str, stages: list[dict[str, Any]],
    transitions: list[dict[str, Any]] | None = None, final: list[str] | None = None,
) -> WorkflowDAG:
    ids = [s["id"] for s in stages]
    return WorkflowDAG.model_validate(
        {
            "id": workflow_id,
            "name": name,
            "version": 1,
            "description": description,
            "initial_stage": ids[0],
            "final_stages": final or [ids[-1]],
            "stages": stages,
            "transitions": transitions if transitions is not None else _chain(ids),
        }
    )


_LIFECYCLE_STAGES = {
    "opportunity_discovery": _stage(
        "opportunity_discovery", "Opportunity Discovery", "opportunity", 90, "STANDARD",
        "compensateOpportunityResearch", ["market_analysis", "scoring", "ranking"]),
    "value_commit": _stage(
        "value_commit", "Value Commit & KPI Targets", "target", 120, "STANDARD",
        "compensateValueCommit", ["kpi_modeling", "contract_generation"]),
    "target_definition": _stage(
        "target_definition", "Target Definition", "target", 120, "STANDARD",
        "compensateValueCommit", ["kpi_modeling", "baseline_analysis"]),
    "realization_tracking": _stage(
        "realization_tracking", "Realization Tracking", "realization", 120, "STANDARD",
        "compensateRealizationTracking", ["metric_calculation", "variance_analysis"]),
    "expansion_modeling": _stage(
        "expansion_modeling", "Expansion Modeling", "expansion", 90, "STANDARD",
        "compensateExpansionModeling", ["financial_modeling", "roi_calculation"]),
    "integrity_controls": _stage(
        "integrity_controls", "Integrity & Compliance Controls", "integrity", 90, "STANDARD",
        "compensateIntegrityControls", ["policy_validation", "attestation"]),
    "integrity_setup": _stage(
        "integrity_setup", "Integrity Setup", "integrity", 60, "STANDARD",
        "compensateIntegrityControls", ["data_quality", "policy_validation"]),
}


def canonical_workflows() -> list[WorkflowDAG]:
    """A fresh list of the seven canonical workflows, in the seed's order."""
    life = _LIFECYCLE_STAGES
    return [
        _workflow(
            "opportunity-discovery-v1", "Opportunity Discovery Workflow",
            "Market analysis and competitive intelligence, stakeholder analysis and "
            "feasibility checks, scoring and ranking.",
            [
                _stage("opportunity_research", "Market Research & Analysis", "opportunity", 90,
                       "STANDARD", "compensateOpportunityResearch",
                       ["market_analysis", "competitive_intelligence"]),
                _stage("opportunity_validation", "Opportunity Validation", "opportunity", 60,
                       "STANDARD", "compensateOpportunityValidation",
                       ["stakeholder_analysis", "feasibility_check"]),
                _stage("opportunity_prioritization", "Opportunity Prioritization",
                       "opportunity", 45, "CONSERVATIVE", "compensateOpportunityPrioritization",
                       ["scoring", "ranking"]),
            ],
        ),
        _workflow(
            "target-value-commit-v1", "Target Value Commit Workflow",
            "KPI modeling and baseline analysis, stakeholder approval, contract generation "
            "and SLA definition, metric instrumentation.",
            [
                _stage("kpi_target_definition", "KPI Target Definition", "target", 120,
                       "STANDARD", "compensateKpiTargets", ["kpi_modeling", "baseline_analysis"]),
                _stage("target_validation", "Target Validation & Approval", "target", 90,
                       "STANDARD", "compensateTargetApproval", ["stakeholder_approval"]),
                _stage("value_commitment", "Value Commitment", "target", 60, "CONSERVATIVE",
                       "compensateValueCommit", ["contract_generation", "sla_definition"]),
                _stage("measurement_framework_setup", "Measurement Framework Setup", "target",
                       75, "STANDARD", "compensateMeasurementFramework",
                       ["metric_instrumentation"]),
            ],
        ),
        _workflow(
            "realization-tracking-v1", "Realization Tracking Workflow",
            "Data ingestion and metric calculation, variance analysis and trend detection, "
            "report generation, and risk assessment and action planning when KPIs are off "
            "target.",
            [
                _stage("data_collection", "Data Collection & Aggregation", "realization", 120,
                       "AGGRESSIVE", "compensateRealizationData",
                       ["data_ingestion", "metric_calculation"]),
                _stage("performance_analysis", "Performance Analysis", "realization", 90,
                       "STANDARD", "compensateRealizationAnalysis",
                       ["variance_analysis", "trend_detection"]),
                _stage("stakeholder_reporting", "Stakeholder Reporting", "realization", 60,
                       "STANDARD", "compensateRealizationReporting",
                       ["report_generation", "dashboard_update"]),
                _stage("intervention_planning", "Intervention Planning", "realization", 75,
                       "STANDARD", "compensateInterventionPlanning",
                       ["risk_assessment", "action_planning"]),
            ],
            transitions=[
                *_chain(["data_collection", "performance_analysis", "stakeholder_reporting"]),
                {
                    "from_stage": "stakeholder_reporting",
                    "to_stage": "intervention_planning",
                    "condition": {
                        "stage": "performance_analysis",
                        "path": "max_abs_variance_pct",
                        "op": "gt",
                        "value": INTERVENTION_VARIANCE_THRESHOLD_PCT,
                    },
                },
            ],
            final=["intervention_planning"],
        ),
        _workflow(
            "expansion-modeling-v1", "Expansion Modeling Workflow",
            "Market scanning and capability assessment, financial modeling and risk analysis, "
            "ROI calculation, timeline planning and resource allocation.",
            [
                _stage("expansion_scanning", "Expansion Opportunity Scanning", "expansion", 90,
                       "STANDARD", "compensateExpansionScanning",
                       ["market_scanning", "capability_assessment"]),
                _stage("scenario_modeling", "Scenario Modeling & Analysis", "expansion", 120,
                       "STANDARD", "compensateScenarioModeling",
                       ["financial_modeling", "risk_analysis"]),
                _stage("business_case_development", "Business Case Development", "expansion",
                       90, "STANDARD", "compensateBusinessCase", ["roi_calculation"]),
                _stage("expansion_roadmap_planning", "Expansion Roadmap Planning", "expansion",
                       75, "CONSERVATIVE", "compensateExpansionRoadmap",
                       ["timeline_planning", "resource_allocation"]),
            ],
        ),
        _workflow(
            "integrity-controls-v1", "Integrity & Compliance Workflow",
            "Data quality and consistency validation, policy validation and regulatory checks, "
            "log generation and provenance tracking, signature generation and attestation.",
            [
                _stage("data_integrity_validation", "Data Integrity Validation", "integrity", 90,
                       "STANDARD", "compensateIntegrityValidation",
                       ["data_quality", "consistency_validation"]),
                _stage("compliance_verification", "Compliance Verification", "integrity", 120,
                       "STANDARD", "compensateComplianceVerification",
                       ["policy_validation", "regulatory_checks"]),
                _stage("audit_trail_generation", "Audit Trail Generation", "integrity", 60,
                       "STANDARD", "compensateAuditTrail",
                       ["log_generation", "provenance_tracking"]),
                _stage("integrity_certification", "Integrity Certification", "integrity", 45,
                       "CONSERVATIVE", "compensateIntegrityCertification",
                       ["signature_generation", "attestation"]),
            ],
        ),
        _workflow(
            "complete-value-lifecycle-v1", "Complete Value Lifecycle",
            "End-to-end workflow across all lifecycle stages.",
            [life[s] for s in ("opportunity_discovery", "value_commit", "realization_tracking",
                               "expansion_modeling", "integrity_controls")],
        ),
        _workflow(
            "parallel-value-lifecycle-v1", "Parallel Value Lifecycle",
            "Optimized workflow with parallel execution: Target Definition and Integrity Setup "
            "fork after Opportunity Discovery and join before Realization Tracking.",
            [life[s] for s in ("opportunity_discovery", "target_definition", "integrity_setup",
                               "realization_tracking", "expansion_modeling")],
            transitions=[
                {"from_stage": "opportunity_discovery", "to_stage": "target_definition"},
                {"from_stage": "opportunity_discovery", "to_stage": "integrity_setup"},
                {"from_stage": "target_definition", "to_stage": "realization_tracking"},
                {"from_stage": "integrity_setup", "to_stage": "realization_tracking"},
                {"from_stage": "realization_tracking", "to_stage": "expansion_modeling"},
            ],
        ),
    ]


CANONICAL_WORKFLOWS: dict[str, WorkflowDAG] = {dag.id: dag for dag in canonical_workflows()}
