"""Names of the built-in compensation handlers and the lifecycle domain each one undoes.

The implementations live with the reference agents (``actors``); a stage may also name any
handler by import path ``module:function``.
"""

from __future__ import annotations

import re

from definitions.models import IMPORT_PATH_PATTERN

__all__ = ["BUILTIN_COMPENSATION_HANDLERS", "is_valid_handler"]

BUILTIN_COMPENSATION_HANDLERS: dict[str, str] = {
    "compensateOpportunityResearch": "opportunity",
    "compensateOpportunityValidation": "opportunity",
    "compensateOpportunityPrioritization": "opportunity",
    "compensateKpiTargets": "target",
    "compensateTargetApproval": "target",
    "compensateValueCommit": "target",
    "compensateMeasurementFramework": "target",
    "compensateRealizationData": "realization",
    "compensateRealizationAnalysis": "realization",
    "compensateRealizationReporting": "realization",
    "compensateRealizationTracking": "realization",
    "compensateInterventionPlanning": "realization",
    "compensateExpansionScanning": "expansion",
    "compensateScenarioModeling": "expansion",
    "compensateBusinessCase": "expansion",
    "compensateExpansionRoadmap": "expansion",
    "compensateExpansionModeling": "expansion",
    "compensateIntegrityValidation": "integrity",
    "compensateComplianceVerification": "integrity",
    "compensateAuditTrail": "integrity",
    "compensateIntegrityCertification": "integrity",
    "compensateIntegrityControls": "integrity",
}

_IMPORT_PATH = re.compile(IMPORT_PATH_PATTERN)


def is_valid_handler(name: str) -> bool:
    return name in BUILTIN_COMPENSATION_HANDLERS or bool(_IMPORT_PATH.match(name))
