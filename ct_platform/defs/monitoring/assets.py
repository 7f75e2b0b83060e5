"""Production monitoring assets, run on the spec's cron by Declarative Automation.

They only compute and record; the retrain sensor reacts to what they record. That keeps the
slow part (reading the log, Evidently) in a run and the sensor tick light.
"""

import dagster as dg

from ct_platform.defs.metadata import numbers, report_links
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.settings import Paths, Spec

PRODUCTION_DRIFT = dg.AssetKey("production_drift")
PRODUCTION_PERFORMANCE = dg.AssetKey("production_performance")


def build_monitoring_defs(spec: Spec) -> dg.Definitions:
    on_schedule = (
        dg.AutomationCondition.cron_tick_passed(spec.monitoring.cron)
        & ~dg.AutomationCondition.in_progress()
    )

    @dg.asset(
        key=PRODUCTION_DRIFT,
        deps=[DEPLOYED_ENDPOINT],
        group_name="monitoring",
        kinds={"evidently"},
        automation_condition=on_schedule,
        description="Live inputs (a window of the prediction log) vs the champion's training "
        "data: per-column drift verdicts and the dataset verdict.",
    )
    def production_drift(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from ct_platform.monitoring.production import check_production_drift

        drift = check_production_drift(spec, Paths.from_env())
        context.log.info(f"production drift: {drift.status} ({drift.rows} rows)")
        metadata = {
            "status": dg.MetadataValue.text(drift.status),
            "rows": dg.MetadataValue.int(drift.rows),
            "champion_version": dg.MetadataValue.text(str(drift.champion_version or "none")),
        }
        if drift.result is not None:
            result = drift.result
            metadata["dataset_drift"] = dg.MetadataValue.bool(result.dataset_drift)
            metadata["drift_share"] = dg.MetadataValue.float(result.drift_share)
            metadata["drifted_columns"] = dg.MetadataValue.text(", ".join(result.drifted_columns))
            for name, column in result.columns.items():
                metadata.update(
                    numbers(
                        f"column/{name}",
                        {"score": column.score, "drift": column.drift, "method": column.method},
                    )
                )
        if drift.report is not None:
            metadata.update(report_links({"report": drift.report}))
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        key=PRODUCTION_PERFORMANCE,
        deps=[DEPLOYED_ENDPOINT],
        group_name="monitoring",
        automation_condition=on_schedule,
        description="The champion's primary metric on labelled live traffic (feedback joined "
        "to logged predictions) vs its holdout metric.",
    )
    def production_performance(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from ct_platform.monitoring.production import check_production_performance

        performance = check_production_performance(spec, Paths.from_env())
        if performance is None:
            return dg.MaterializeResult(
                metadata={"status": dg.MetadataValue.text("no champion yet")}
            )
        context.log.info(f"production performance: {performance.to_dict()}")
        return dg.MaterializeResult(metadata=numbers("", performance.to_dict()))

    return dg.Definitions(assets=[production_drift, production_performance])
