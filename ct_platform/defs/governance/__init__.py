"""The governance layer in Dagster: model cards, the audit table, the approval job."""

import dagster as dg

from ct_platform.defs.governance.approval import build_approval_job
from ct_platform.defs.governance.assets import build_governance_assets
from ct_platform.settings import Spec


def build_governance_defs(spec: Spec) -> dg.Definitions:
    return dg.Definitions(assets=build_governance_assets(spec), jobs=[build_approval_job(spec)])


__all__ = ["build_governance_defs"]
