"""The retrain sensor: drift or decay, as recorded by the monitoring assets, retrains —
when the retrain governor allows it. Each skipped trigger says why.

A tick reads two latest materializations and a small ledger; nothing heavy happens here.
Every tick that requests no run says why in its skip reason (shown on the tick in the UI):
per trigger, what was measured with its figures, and the governor's decision.
"""

import dagster as dg

from ct_platform.defs.monitoring.assets import PRODUCTION_DRIFT, PRODUCTION_PERFORMANCE
from ct_platform.defs.training.assets import MODEL_EVALUATION, WINDOW_TAG
from ct_platform.monitoring.governor import Outcome, RetrainGovernor, Trigger
from ct_platform.settings import Spec

EPISODE_TAG = "ct/episode"
TRIGGER_TAG = "ct/trigger"
CHAMPION = dg.AssetKey("champion")
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, object]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def current_signals(instance: dg.DagsterInstance, spec: Spec) -> dict[str, tuple[bool | None, str]]:
    """Each trigger kind: whether it is active now (None: the latest measurement gave no
    verdict, e.g. too little data), and a line saying what was seen, with its figures."""
    return {
        "drift": _drift_signal(latest_metadata(instance, PRODUCTION_DRIFT), spec),
        "decay": _decay_signal(latest_metadata(instance, PRODUCTION_PERFORMANCE), spec),
    }


def _drift_signal(drift: dict[str, object], spec: Spec) -> tuple[bool | None, str]:
    if "dataset_drift" not in drift:
        return None, str(drift.get("status") or "production_drift not measured yet")
    share = float(drift.get("drift_share") or 0.0)
    threshold = spec.monitoring.drift_share_threshold
    detail = (
        f"drift share {share:.0%} (threshold {threshold:.0%}, "
        f"drifted: {drift.get('drifted_columns') or 'none'})"
    )
    return bool(drift["dataset_drift"]), detail


def _decay_signal(decay: dict[str, object], spec: Spec) -> tuple[bool | None, str]:
    figures = [decay.get(key) for key in ("value", "reference", "decay")]
    if "decayed" not in decay or not all(isinstance(f, int | float) for f in figures):
        # No verdict, or a materialization without figures (e.g. from an older version).
        return None, str(decay.get("status") or "production_performance not measured yet")
    value, reference, shortfall = figures
    # Older materializations lack the tolerance they applied: the spec's (or its default).
    tolerance = decay.get("tolerance")
    if not isinstance(tolerance, int | float):
        tolerance = spec.monitoring.decay_margin(str(decay.get("metric")), reference)
    p_value = decay.get("p_value")
    noise = f", p = {p_value:.3g}" if isinstance(p_value, int | float) else ""
    detail = (
        f"{decay.get('metric')} {value:.3f} vs holdout {reference:.3f} "
        f"(shortfall {shortfall:+.3f}, tolerance {tolerance:.4g}{noise})"
    )
    return bool(decay["decayed"]), detail


def retrain_outcome(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[Outcome, str]:
    """Promoted if the run moved the champion; rejected if it evaluated a candidate that did
    not pass; failed otherwise (crash, or no new model to evaluate)."""
    if materialized_in(instance, CHAMPION, run):
        return "promoted", f"run {run.run_id} promoted a new champion"
    if materialized_in(instance, MODEL_EVALUATION, run):
        return "rejected", f"run {run.run_id}: the candidate did not pass its gates"
    return "failed", f"run {run.run_id} ended {run.status.value} without evaluating a candidate"


def materialized_in(instance: dg.DagsterInstance, key: dg.AssetKey, run: dg.DagsterRun) -> bool:
    event = instance.get_latest_materialization_event(key)
    return event is not None and event.run_id == run.run_id


def close_finished_retrain(instance: dg.DagsterInstance, governor: RetrainGovernor) -> None:
    in_flight = governor.ledger().in_flight
    if not in_flight:
        return
    runs = instance.get_runs(dg.RunsFilter(tags={EPISODE_TAG: in_flight["episode"]}), limit=1)
    if runs and runs[0].status in FINISHED:
        governor.retrain_finished(*retrain_outcome(instance, runs[0]))


def build_retrain_sensor(spec: Spec, job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="retrain_sensor",
        job_name=job_name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Retrains on production drift or decay, within the governor's limits.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        governor = RetrainGovernor(spec.monitoring.governor)
        close_finished_retrain(context.instance, governor)
        skipped = []
        for kind, (active, detail) in current_signals(context.instance, spec).items():
            if active is None:
                # No verdict is not "no drift": the ongoing episode (if any) stays open.
                skipped.append(f"{kind}: no verdict ({detail})")
                continue
            episode = governor.episode(kind, active)
            if episode is None:
                skipped.append(f"{kind}: none, {detail}")
                continue
            decision = governor.decide(Trigger(kind, episode, detail))
            if not decision.allowed:
                skipped.append(f"{kind}: {detail}; governor says no: {decision.reason}")
                continue
            governor.retrain_started(episode)
            tags = {
                TRIGGER_TAG: kind,
                EPISODE_TAG: episode,
                WINDOW_TAG: str(spec.monitoring.retrain_window_batches),
            }
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=episode, tags=tags)])
        return dg.SensorResult(skip_reason="no retrain. " + " | ".join(skipped))

    return retrain_sensor
