"""Security checks that hang on the data and the bundle rather than on the evaluation.

- `pii` on `training_dataset`: personal data in the training set. Blocking (per the spec)
  stops the run before a model is trained on it, or its holdout logged to MLflow.
- `bundle_secrets` and `vulnerabilities` on `model_bundle`: the files that will serve and
  the environment they are served from. Blocking (per the spec) keeps the bundle from being
  deployed (`deployed_endpoint` waits on its deps' blocking checks). Both verdicts are also
  written on the version the bundle holds (`ct.gate.<name>`, like every gate) and that
  version's card is logged again with them (`governance.card.record_bundle_verdict`).

The fairness, model-secrets and PII verdicts recorded on the model version are gates of
`model_evaluation` (see `training.promotion`), so a failed blocking one keeps the champion.
"""

from pathlib import Path

import dagster as dg

from ct_platform.defs.metadata import numbers, severity
from ct_platform.defs.resources import MlflowResource
from ct_platform.defs.serving.assets import MODEL_BUNDLE
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.gates import GateResult

TRAINING_DATASET = dg.AssetKey("training_dataset")


def check_result(gate: GateResult, version: int | None = None) -> dg.AssetCheckResult:
    """The check result of `gate`; `version`: the model version it was recorded on."""
    recorded_on = {} if version is None else {"version": dg.MetadataValue.int(version)}
    return dg.AssetCheckResult(
        passed=gate.passed,
        severity=severity(gate.blocking),
        metadata={**numbers("", gate.metadata), **recorded_on},
        description=gate.description,
    )


def bundle_path(context: dg.AssetCheckExecutionContext) -> Path:
    """The folder of the latest `model_bundle` materialization (its `path` metadata)."""
    event = context.instance.get_latest_materialization_event(MODEL_BUNDLE)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("model_bundle has never been materialized: no bundle to check")
    return Path(event.asset_materialization.metadata["path"].value)


def recorded(
    gate: GateResult, bundle: Path, mlflow: MlflowResource, spec: Spec
) -> dg.AssetCheckResult:
    """The check result of a gate judged on `bundle`, once recorded on the version it holds."""
    from ct_platform.governance.card import record_bundle_verdict

    return check_result(gate, record_bundle_verdict(mlflow.registry(spec), bundle, gate, spec))


def build_security_checks(spec: Spec) -> dg.Definitions:
    security = spec.gates.security

    @dg.asset_check(
        asset=TRAINING_DATASET,
        name="pii",
        blocking=security.pii.blocking,
        description="No emails, phone numbers, IBANs or Luhn-valid card numbers in the text "
        "and category columns (presidio pattern recognizers, sampled); blocks training.",
    )
    def training_set_pii(training_dataset: TrainingSetRef) -> dg.AssetCheckResult:
        from ct_platform.training.security import training_set_pii_gate

        return check_result(training_set_pii_gate(training_dataset, spec))

    @dg.asset_check(
        asset=MODEL_BUNDLE,
        name="bundle_secrets",
        blocking=security.secrets.blocking,
        description="No secret (detect-secrets) in the bundle's files: metadata, manifest, "
        "and the strings inside the ONNX graph and the skops file.",
    )
    def bundle_secrets(
        context: dg.AssetCheckExecutionContext, mlflow: MlflowResource
    ) -> dg.AssetCheckResult:
        from ct_platform.training.security import bundle_secrets_gate

        bundle = bundle_path(context)
        return recorded(bundle_secrets_gate(bundle, spec), bundle, mlflow, spec)

    @dg.asset_check(
        asset=MODEL_BUNDLE,
        name="vulnerabilities",
        blocking=security.vulnerabilities.blocking,
        description="No installed distribution of the serving environment has a known "
        "advisory (offline OSV file and/or PyPI via pip-audit); 'unknown' is a warning.",
    )
    def vulnerabilities(
        context: dg.AssetCheckExecutionContext, mlflow: MlflowResource
    ) -> dg.AssetCheckResult:
        from ct_platform.training.security import vulnerabilities_gate

        return recorded(vulnerabilities_gate(spec), bundle_path(context), mlflow, spec)

    return dg.Definitions(asset_checks=[training_set_pii, bundle_secrets, vulnerabilities])
