"""Fairness and security gates in `training_job`, on a real Dagster instance and MLflow store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dagster as dg
import pytest

from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.settings import load_spec
from ct_platform_tests.defs.conftest import run_job, spec_variant

pytestmark = pytest.mark.slow

MODEL_EVALUATION_GATES = {"fairness", "secrets", "pii"}


def checks_by_asset(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def test_gates_run_in_training_job_and_a_failed_fairness_gate_keeps_the_champion(
    spec_file, spec, instance, land_bank_batches
):
    land_bank_batches(2)
    # The real model's gap between marital groups sits near the default limit (0.1) on two
    # batches and moves with the window's exact rows: the first run is judged against a
    # limit it meets by design; the second against no gap at all.
    lenient = load_spec(
        spec_variant(spec_file, "lenient", {"gates": {"fairness": {"metric_gap": 0.5}}})
    )

    first = run_job(lenient, instance, "training_job")

    assert first.success
    checks = checks_by_asset(first)
    for gate in MODEL_EVALUATION_GATES:
        assert checks[("model_evaluation", gate)].passed, checks[("model_evaluation", gate)]
    assert checks[("training_dataset", "pii")].passed
    assert checks[("model_bundle", "bundle_secrets")].passed
    # Only PyPI's project pages answer here, not its per-version advisory data: "unknown".
    vulnerabilities = checks[("model_bundle", "vulnerabilities")]
    assert not vulnerabilities.passed
    assert vulnerabilities.severity == dg.AssetCheckSeverity.WARN
    assert vulnerabilities.description.startswith("unknown: no advisory source answered")
    evaluation = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    metadata = evaluation.asset_materialization.metadata
    # Numbers, so the UI plots them over versions.
    assert isinstance(metadata["fairness/marital/demographic_parity_difference"].value, float)
    assert isinstance(metadata["fairness/marital/married/selection_rate"].value, float)
    registry = ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)
    tags = registry.version(1).tags
    assert tags["ct.gate.fairness"] == "pass"
    assert tags["ct.gate.fairness.reason"].startswith("marital: demographic_parity_difference")
    assert tags["ct.gate.secrets"] == "pass" and tags["ct.gate.pii"] == "pass"
    assert_bundle_verdicts_on_the_served_version(registry, checks, spec.paths.bundles)

    land_bank_batches(1, first=2)
    # No gap at all is allowed: the real model's small differences between groups now fail.
    strict = load_spec(
        spec_variant(
            spec_file,
            "fair",
            {"gates": {"fairness": {"blocking": True, "threshold": 0.0, "metric_gap": 0.0}}},
        )
    )

    second = run_job(strict, instance, "training_job")

    assert not second.success
    fairness = checks_by_asset(second)[("model_evaluation", "fairness")]
    assert not fairness.passed and fairness.severity == dg.AssetCheckSeverity.ERROR
    assert "demographic_parity_difference" in fairness.description and "over 0" in (
        fairness.description
    )
    # Version 1 was the first holdout fit, version 2 its refit (the champion); version 3 is
    # the rejected candidate, never refit.
    assert registry.alias_version("champion").version == 2
    rejected = registry.version(3).tags
    assert rejected["ct.gate.fairness"] == "fail" and rejected["ct.gates_passed"] == "false"
    assert "over 0" in rejected["ct.gate.fairness.reason"]


def assert_bundle_verdicts_on_the_served_version(
    registry: ModelRegistry, checks: dict[tuple[str, str], object], bundles: Path
) -> None:
    """The bundle's gates land on the version the bundle holds (v2, the refit), like every
    gate, and that version's card logged to MLflow shows them."""
    for gate in ("bundle_secrets", "vulnerabilities"):
        assert checks[("model_bundle", gate)].metadata["version"].value == 2
    tags = registry.version(2).tags
    assert tags["ct.gate.bundle_secrets"] == "pass"
    assert (
        tags["ct.gate.bundle_secrets.reason"]
        == checks[("model_bundle", "bundle_secrets")].description
    )
    assert tags["ct.gate.vulnerabilities"] == "fail"  # "unknown": a warning, never a pass
    assert tags["ct.gate.vulnerabilities.reason"].startswith("unknown: no advisory source")
    assert "ct.gate.bundle_secrets" not in registry.version(1).tags  # v1 was never exported
    assert registry.version(2).tags["ct.gates_passed"] == "true"
    with tempfile.TemporaryDirectory() as folder:
        card = registry.download_artifact(
            registry.version(2).run_id, "card/card.md", Path(folder)
        ).read_text()
    assert "| bundle\\_secrets | pass |" in card
    assert "| vulnerabilities | fail | unknown: no advisory source" in card
    sealed = (bundles / f"{registry.model_name}-v2" / "card.md").read_text()
    assert "| bundle\\_secrets | not judged yet |" in sealed


def _luhn_valid(prefix: str) -> str:
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(prefix)):
        doubled = digit * 2 if i % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return prefix + str((10 - total % 10) % 10)


def test_card_numbers_in_the_training_data_stop_the_run_before_training(
    spec_file, instance, bank_frame, write_batch
):
    # A free-text column the spec declares, filled with Luhn-valid card numbers.
    with_cards = load_spec(
        spec_variant(spec_file, "cards", {"dataset": {"columns": {"card": {"type": "category"}}}})
    )
    for i in range(2):
        batch = bank_frame.iloc[i * 2000 : (i + 1) * 2000].copy()
        batch["card"] = [_luhn_valid(f"5500{i}{row:010d}") for row in range(len(batch))]
        write_batch(batch, f"batch-{i + 1:05d}.csv")

    result = run_job(with_cards, instance, "training_job")

    assert not result.success
    pii = checks_by_asset(result)[("training_dataset", "pii")]
    assert not pii.passed and pii.severity == dg.AssetCheckSeverity.ERROR
    assert "column 'card': CREDIT_CARD" in pii.description
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "training_dataset" in materialized and "candidate_model" not in materialized
    registry = ModelRegistry(default_tracking_uri(), with_cards.model.name, with_cards.dataset.name)
    assert registry.alias_version("champion") is None
