"""The bare benchmark script does the training job's work end to end and times each step."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from ct_platform.monitoring.champion_reference import load_champion_reference
from ct_platform.serving.bundle import read_meta
from ct_platform.serving.manifest import verify_manifest
from ct_platform.settings import Paths, Spec
from ct_platform_tests.conftest import REPO_ROOT

STEPS = [
    "training_dataset",
    "pii_check",
    "candidate_model",
    "model_evaluation",
    "refit_model",
    "evaluation_reports",
    "model_card",
    "champion",
    "model_bundle",
    "bundle_secrets_check",
    "vulnerabilities_check",
]


@pytest.fixture(scope="module")
def bare() -> ModuleType:
    """benchmarks/ is a folder of scripts, not a package: load the script by path."""
    path = REPO_ROOT / "benchmarks" / "training" / "bare.py"
    spec = importlib.util.spec_from_file_location("bare_training_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_bare_does_every_step_of_the_job(
    bare: ModuleType, bank_frame: pd.DataFrame, spec: Spec, write_batch, tmp_path: Path
) -> None:
    newest = bank_frame.tail(10_000).reset_index(drop=True)
    for number, start in enumerate(range(0, len(newest), 4000), start=1):
        write_batch(newest.iloc[start : start + 4000], f"batch-{number:05d}.csv")
    (tmp_path / "models").mkdir()
    paths = Paths.from_env()

    phases = bare.run_bare(spec, paths, tmp_path / "models")

    assert list(phases) == STEPS
    assert all(seconds > 0 for seconds in phases.values())
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "holdout_fit.skops",
        "refit.skops",
    ]
    assert len(list(paths.validated.glob("*.parquet"))) == 3  # every batch ingested
    bundle = paths.bundles / "bank_marketing-v2"
    verify_manifest(bundle)
    assert read_meta(bundle).onnx.enabled
    # Markdown escapes the underscore of the model name.
    assert (bundle / "card.md").read_text().startswith("# Model card: bank\\_marketing version 2")
    reports = paths.reports / "bank_marketing-v1"
    assert {p.name for p in reports.iterdir()} == {"quality.html", "data_drift.html"}
    assert (paths.home / "cards" / "bank_marketing-v1" / "card.html").exists()
    reference = load_champion_reference(paths)
    assert reference is not None and reference.version == 2
    assert 0.5 < reference.holdout_metric <= 1.0


def test_a_failed_blocking_gate_stops_the_script(bare: ModuleType, spec: Spec) -> None:
    from ct_platform.training.gates import GateResult

    passed = GateResult("model_size", True, True, "0.8 MB")
    warned = GateResult("fairness", False, False, "gap 0.2 over 0.1")
    assert bare.judged((passed, warned)) == (passed, warned)
    failed = GateResult("metric_floor", False, True, "roc_auc 0.41 under 0.5")
    with pytest.raises(SystemExit, match=r"metric_floor: roc_auc 0\.41 under 0\.5"):
        bare.judged((passed, failed))
