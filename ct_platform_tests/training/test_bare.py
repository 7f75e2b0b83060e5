"""The bare benchmark script runs the training job end to end and checks what it reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from ct_platform.settings import Spec
from ct_platform_tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def bare() -> ModuleType:
    """benchmarks/ is a folder of scripts, not a package: load the script by path."""
    path = REPO_ROOT / "benchmarks" / "training" / "bare.py"
    spec = importlib.util.spec_from_file_location("bare_training_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_bare_times_every_step(
    bare: ModuleType, bank_frame: pd.DataFrame, spec_file: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "bank.csv.gz"
    bank_frame.tail(10_000).to_csv(csv, sep=";", index=False)  # 3 batches, the last partial
    result = bare.run_bare(spec_file, csv)
    steps = ["read_s", "validate_s", "clean_s", "fit_s", "evaluate_s", "save_s"]
    assert all(result[step] > 0 for step in steps)
    assert result["total_s"] >= sum(result[step] for step in steps)
    assert (result["train_rows"], result["holdout_rows"]) == (8000, 2000)
    assert 0.5 < result["roc_auc"] <= 1.0
    assert result["model_bytes"] > 10_000


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b.drop(columns=["euribor3m"]), r"missing columns \['euribor3m'\]"),
        (lambda b: b.assign(age=b["age"].where(b.index != 3, 250)), r"age: values outside"),
        (lambda b: b.assign(age=b["age"].astype(str).where(b.index != 3, "x")), "non-numeric"),
        (lambda b: b.assign(job=b["job"].where(b.index != 3, "astronaut")), "job: unknown"),
        (lambda b: b.assign(y=b["y"].where(b.index != 3, 7)), "y: unknown labels"),
    ],
    ids=["missing-column", "out-of-range", "non-numeric", "unknown-category", "unknown-label"],
)
def test_validate_refuses_a_bad_batch(
    bare: ModuleType, bank_frame: pd.DataFrame, spec: Spec, damage, message: str
) -> None:
    batch = bank_frame.head(100)
    bare.validate(batch, spec)  # the original batch passes
    with pytest.raises(ValueError, match=message):
        bare.validate(damage(batch), spec)


def test_clean_drops_leaks_and_turns_sentinels_into_nan(
    bare: ModuleType, bank_frame: pd.DataFrame, spec: Spec
) -> None:
    cleaned = bare.clean(bank_frame.head(100), spec)
    assert list(cleaned.columns) == [*spec.dataset.columns, "y"]  # duration gone
    assert cleaned["pdays"].isna().all()  # 999 = never contacted, in every one of these rows
    assert cleaned["age"].dtype == "float64"
    assert all(type(value) is str for value in cleaned["job"])
