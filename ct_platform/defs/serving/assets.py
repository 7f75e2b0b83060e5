"""Champion -> model bundle (ONNX, behind the parity gate) -> deployed endpoint."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.defs.automation import follows_every_update
from ct_platform.defs.metadata import numbers, severity
from ct_platform.defs.resources import MlflowResource
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.serving.bundle import BundleMeta

MODEL_BUNDLE = dg.AssetKey("model_bundle")
DEPLOYED_ENDPOINT = dg.AssetKey("deployed_endpoint")
PARITY_CHECK = "onnx_parity"
SERVES_CHAMPION_CHECK = "serves_champion"
# On a run the endpoint watchdog requests: what it found (the repair's reason).
REPAIR_TAG = "ct/repair"


def parity_check_result(meta: "BundleMeta", spec: Spec) -> dg.AssetCheckResult:
    """The ONNX parity gate (`training.gates.onnx_parity_gate`) of the exported bundle."""
    from ct_platform.training.gates import onnx_parity_gate

    gate = onnx_parity_gate(meta, spec)
    return dg.AssetCheckResult(
        asset_key=MODEL_BUNDLE,
        check_name=PARITY_CHECK,
        passed=gate.passed,
        severity=severity(gate.blocking),
        metadata=numbers("", gate.metadata),
        description=gate.description,
    )


def requested_by(run: dg.DagsterRun) -> str:
    """Who or what started a `deployed_endpoint` run (`governance.audit.run_actor`), with the
    watchdog's reason when it asked for a repair: e.g. "automation condition of
    deployed_endpoint (evaluation 230, ct_automation)"."""
    from ct_platform.governance.audit import run_actor

    repair = run.tags.get(REPAIR_TAG)
    return run_actor(run) + (f": {repair}" if repair else "")


def latest_bundle(instance: dg.DagsterInstance) -> str:
    """The `model_bundle` materialization a `deployed_endpoint` run follows (what an
    automation condition's `any_deps_updated` reacts to): "version 8, exported by Dagster
    run 42e0fc64 (training_job) at <UTC time>"; "none" before the first."""
    event = instance.get_latest_materialization_event(MODEL_BUNDLE)
    if event is None or event.asset_materialization is None:
        return "none"
    version = event.asset_materialization.metadata.get("version")
    run = instance.get_run_by_id(event.run_id)
    job = f" ({run.job_name})" if run is not None else ""
    at = datetime.fromtimestamp(event.timestamp, UTC).isoformat(timespec="seconds")
    shown = version.value if version is not None else "?"
    return f"version {shown}, exported by Dagster run {event.run_id[:8]}{job} at {at}"


def build_serving_defs(spec: Spec) -> dg.Definitions:
    @dg.asset(
        key=MODEL_BUNDLE,
        deps=["champion"],
        group_name="serving",
        kinds={"onnx"},
        automation_condition=follows_every_update(),
        check_specs=[
            dg.AssetCheckSpec(
                PARITY_CHECK,
                asset=MODEL_BUNDLE,
                blocking=spec.gates.parity.blocking,
                description="ONNX and sklearn agree on the holdout (labels identical, "
                "outputs within the spec's tolerance); otherwise the bundle is sklearn-only.",
            )
        ],
        description="The champion exported for serving: ONNX graph, input schema, skops fallback.",
    )
    def model_bundle(
        context: dg.AssetExecutionContext, mlflow: MlflowResource
    ) -> Iterator[dg.MaterializeResult]:
        from ct_platform.deployment.export import export_champion_bundle
        from ct_platform.registry.versions import CHAMPION, release_alias
        from ct_platform.serving.bundle import read_meta

        registry = mlflow.registry(spec)
        alias = release_alias(spec)
        if alias != CHAMPION and registry.alias_version(alias) is None:
            # A progressive strategy with nothing to roll out (e.g. the spec was just switched
            # from `direct`): the champion's bundle is what serves.
            context.log.info(f"no version holds `{alias}`: exporting the champion's bundle")
            alias = CHAMPION
        bundle_dir = export_champion_bundle(spec, registry, alias=alias)
        meta = read_meta(bundle_dir)
        context.log.info(f"bundle {bundle_dir} (onnx={meta.onnx.enabled})")
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(bundle_dir)),
                "version": dg.MetadataValue.text(meta.version),
                # The alias whose version was exported: `canary` while one is to roll out.
                "alias": dg.MetadataValue.text(alias),
                "fingerprint": dg.MetadataValue.text(meta.fingerprint),
                "onnx": dg.MetadataValue.bool(meta.onnx.enabled),
            },
            check_results=[parity_check_result(meta, spec)],
        )

    @dg.asset(
        key=DEPLOYED_ENDPOINT,
        deps=[MODEL_BUNDLE],
        group_name="serving",
        kinds={spec.serving.target},
        automation_condition=follows_every_update()
        & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        description=f"The live endpoint ({spec.serving.target} target) serving the champion.",
    )
    def deployed_endpoint(
        context: dg.AssetExecutionContext, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        from ct_platform.deployment.controller import active_rollout
        from ct_platform.deployment.rollout import roll_out
        from ct_platform.governance.audit import run_actor

        # `roll_out` writes the audit line of what it deploys, with what it found; a rerun
        # that finds the champion's bundle already serving deploys and records nothing.
        done = roll_out(
            spec, mlflow.registry(spec), run_id=context.run.run_id, actor=run_actor(context.run)
        )
        endpoint = done.endpoint
        context.log.info(f"endpoint {endpoint.url}: {done.reason}")
        rollout = active_rollout(spec)
        rolling = {"rollout": f"{rollout.strategy} of v{rollout.version}"} if rollout else {}
        return dg.MaterializeResult(
            metadata={
                "url": dg.MetadataValue.url(endpoint.url),
                "version": dg.MetadataValue.text(endpoint.version),
                "target": dg.MetadataValue.text(endpoint.target),
                "deployed_at": dg.MetadataValue.text(endpoint.deployed_at),
                "changed": dg.MetadataValue.bool(done.changed),
                "reason": dg.MetadataValue.text(done.reason),
                # Why this run happened at all: what started it, and the bundle it follows.
                "requested_by": dg.MetadataValue.text(requested_by(context.run)),
                "latest_bundle": dg.MetadataValue.text(latest_bundle(context.instance)),
                **numbers("", rolling),
            }
        )

    @dg.asset_check(
        asset=DEPLOYED_ENDPOINT,
        name=SERVES_CHAMPION_CHECK,
        blocking=False,
        description="The live endpoint answers and serves the champion's version.",
    )
    def serves_champion(mlflow: MlflowResource) -> dg.AssetCheckResult:
        from ct_platform.deployment.rollout import live_endpoint_status

        status = live_endpoint_status(spec, mlflow.registry(spec))
        return dg.AssetCheckResult(
            passed=status.serves_champion,
            metadata=numbers("", status.figures()),
            description=status.describe(),
        )

    return dg.Definitions(assets=[model_bundle, deployed_endpoint], asset_checks=[serves_champion])
