"""Production monitoring assets, run on the spec's cron by Declarative Automation.

They only compute and record; the retrain sensor reacts to what they record. That keeps the
slow part (reading the log, Evidently) in a run and the sensor tick light.
"""

import dagster as dg

from ct_platform.defs.metadata import numbers, report_links
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving.assets import DEPLOYED_ENDPOINT
from ct_platform.monitoring.results import DriftResult  # plain dataclasses: light to import
from ct_platform.settings import Paths, Spec

PRODUCTION_DRIFT = dg.AssetKey("production_drift")
PRODUCTION_PERFORMANCE = dg.AssetKey("production_performance")


SAMPLE_SIZE_CHECK = "sample_size"
CONTRACT_CHECK = "contract"


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
        check_specs=[
            dg.AssetCheckSpec(
                SAMPLE_SIZE_CHECK,
                asset=PRODUCTION_DRIFT,
                description="The window holds enough rows for a drift verdict "
                f"(monitoring.min_window_rows = {spec.monitoring.min_window_rows}).",
            ),
            dg.AssetCheckSpec(
                CONTRACT_CHECK,
                asset=PRODUCTION_DRIFT,
                description="The logged inputs keep the dataset contract: numbers within "
                "min/max, known categories, numeric columns holding numbers. Violations are "
                "named per column with counts; a column with more than "
                f"monitoring.max_invalid_share = {spec.monitoring.max_invalid_share} of its "
                "rows invalid gets no drift verdict.",
            ),
        ],
        description="Live inputs (a window of the prediction log) vs the champion's training "
        "data: every column's status (verdict, or why not tested) and the dataset verdict; "
        "no verdict on too little data.",
    )
    def production_drift(
        context: dg.AssetExecutionContext, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        from ct_platform.monitoring.figures import write_drift_figures
        from ct_platform.monitoring.production import check_production_drift

        paths = Paths.from_env()
        drift = check_production_drift(spec, paths, *_serving_champion(context, mlflow, spec))
        # Exported on the model server's /metrics (see serving.platform_figures).
        write_drift_figures(paths, drift, spec.monitoring.drift_share_threshold)
        context.log.info(f"production drift: {drift.status} ({drift.rows} rows)")
        for line in [] if drift.result is None else drift.result.describe_violations():
            context.log.warning(f"contract violation in the logged inputs: {line}")
        metadata = {
            "status": dg.MetadataValue.text(drift.status),
            "rows": dg.MetadataValue.int(drift.rows),
            "champion_version": dg.MetadataValue.text(str(drift.champion_version or "none")),
        }
        if drift.result is not None:
            metadata.update(_drift_metadata(drift.result))
        if drift.report is not None:
            metadata.update(report_links({"report": drift.report}))
        has_verdict = drift.result is not None and drift.result.dataset_drift is not None
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                _sample_size_result(has_verdict, drift.status, drift.rows),
                _contract_result(drift.result, drift.rows, drift.status),
            ],
        )

    @dg.asset(
        key=PRODUCTION_PERFORMANCE,
        deps=[DEPLOYED_ENDPOINT],
        group_name="monitoring",
        automation_condition=on_schedule,
        check_specs=[
            dg.AssetCheckSpec(
                SAMPLE_SIZE_CHECK,
                asset=PRODUCTION_PERFORMANCE,
                description="Enough labelled rows for a performance verdict "
                f"(monitoring.min_feedback_rows = {spec.monitoring.min_feedback_rows}, "
                f"min_feedback_per_class = {spec.monitoring.min_feedback_per_class}).",
            )
        ],
        description="The champion's primary metric on labelled live traffic (feedback joined "
        "to logged predictions) vs its holdout metric; no verdict on too few labels.",
    )
    def production_performance(
        context: dg.AssetExecutionContext, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        from ct_platform.monitoring.figures import write_performance_figures
        from ct_platform.monitoring.production import check_production_performance

        paths = Paths.from_env()
        champion, note = _serving_champion(context, mlflow, spec)
        production = check_production_performance(spec, paths, champion, note)
        if isinstance(production, str):
            return dg.MaterializeResult(
                metadata={
                    "status": dg.MetadataValue.text(production),
                    "champion_version": dg.MetadataValue.text(str(champion or "none")),
                },
                check_results=[_sample_size_result(False, production, 0)],
            )
        performance = production.result
        write_performance_figures(paths, performance, production.champion_version)
        context.log.info(f"production performance: {performance.to_dict()}")
        values = {k: v for k, v in performance.to_dict().items() if v is not None}
        return dg.MaterializeResult(
            metadata={
                **numbers("", values),
                "champion_version": dg.MetadataValue.text(str(production.champion_version)),
            },
            check_results=[
                _sample_size_result(
                    performance.decayed is not None, performance.reason, performance.n_labelled
                )
            ],
        )

    return dg.Definitions(assets=[production_drift, production_performance])


def _serving_champion(
    context: dg.AssetExecutionContext, mlflow: MlflowResource, spec: Spec
) -> tuple[int | None, str]:
    """The version `champion` names (None: none yet) with its drift reference in place
    (rebuilt when missing or stale); "" or why the reference cannot be its."""
    from ct_platform.governance.lifecycle import follow_serving_champion

    champion, note = follow_serving_champion(mlflow.registry(spec), spec)
    if note:
        context.log.error(f"version {champion} serves as champion; {note}")
    return champion, note


def _drift_metadata(result: DriftResult) -> dict[str, dg.MetadataValue]:
    """Dataset verdict (only when there is one) and every column's status."""
    metadata: dict[str, dg.MetadataValue] = {}
    if result.dataset_drift is not None:
        metadata["dataset_drift"] = dg.MetadataValue.bool(result.dataset_drift)
        metadata["drift_share"] = dg.MetadataValue.float(result.drift_share or 0.0)
        metadata["drifted_columns"] = dg.MetadataValue.text(", ".join(result.drifted_columns))
    statuses = result.column_statuses()
    for name, column in result.columns.items():
        values = {"status": statuses[name], "score": column.score, "drift": column.drift}
        metadata.update(numbers(f"column/{name}", {**values, "method": column.method}))
    for name, why in result.invalid.items():
        metadata[f"column/{name}/status"] = dg.MetadataValue.text(f"invalid: {why}")
    for name, why in result.not_tested.items():
        metadata[f"column/{name}/status"] = dg.MetadataValue.text(f"not tested: {why}")
    for name, violations in result.violations.items():
        metadata[f"column/{name}/violations"] = dg.MetadataValue.text(violations.describe())
    return metadata


def _contract_result(result: DriftResult | None, rows: int, status: str) -> dg.AssetCheckResult:
    """Fails (WARN) naming every column whose logged values break the contract, with counts;
    nothing read (`status` says why: no champion yet, no reference) passes with that said."""
    lines = [] if result is None else result.describe_violations()
    if result is None:
        description = f"nothing checked: {status}"
    elif lines:
        description = "; ".join(lines)
    else:
        description = f"all {rows} logged rows keep the contract"
    return dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        passed=not lines,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "rows": dg.MetadataValue.int(rows),
            "columns": dg.MetadataValue.text(", ".join(result.violations) if lines else ""),
        },
    )


def _sample_size_result(has_verdict: bool, status: str, rows: int) -> dg.AssetCheckResult:
    """Passes only when there was enough data for a verdict: too little data is a warning
    that names the figures, never a silent pass."""
    return dg.AssetCheckResult(
        check_name=SAMPLE_SIZE_CHECK,
        passed=has_verdict,
        severity=dg.AssetCheckSeverity.WARN,
        description=status,
        metadata={"rows": dg.MetadataValue.int(rows), "status": dg.MetadataValue.text(status)},
    )
