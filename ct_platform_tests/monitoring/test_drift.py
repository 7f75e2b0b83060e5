"""The fast drift check against real, full-data Evidently (DataDriftPreset, default methods)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ct_platform.monitoring.drift import ReferenceProfile, detect_drift, evidently_method
from ct_platform.monitoring.evidently_reports import data_drift_report, evidently_value_drift
from ct_platform.monitoring.frames import MissingColumnsError
from ct_platform.settings import Spec
from ct_platform_tests.monitoring.conftest import PLANTED


def _verdicts(result) -> dict[str, tuple[str, bool]]:
    return {name: (c.method, c.drift) for name, c in result.columns.items()}


def test_planted_drift_matches_evidently(
    spec: Spec, same_distribution, planted: pd.DataFrame, tmp_path: Path
) -> None:
    reference, _ = same_distribution
    threshold = spec.monitoring.drift_share_threshold
    fast = detect_drift(reference, planted, spec.dataset, drift_share_threshold=threshold)
    full = data_drift_report(reference, planted, spec, tmp_path / "drift.html")

    assert sorted(fast.drifted_columns) == sorted(PLANTED)
    assert _verdicts(fast) == _verdicts(full)
    assert fast.drift_share == pytest.approx(full.drift_share)
    for name, column in fast.columns.items():
        assert column.score == pytest.approx(full.columns[name].score, abs=0.01), name
    assert (tmp_path / "drift.html").stat().st_size > 0


def test_same_distribution_has_no_drift_like_evidently(
    spec: Spec, same_distribution, tmp_path: Path
) -> None:
    reference, current = same_distribution
    fast = detect_drift(reference, current, spec.dataset, drift_share_threshold=0.5)
    full = data_drift_report(reference, current, spec, tmp_path / "drift.html")

    assert fast.drifted_columns == [] and not fast.dataset_drift
    assert _verdicts(fast) == _verdicts(full)


def test_sampling_keeps_verdicts(spec: Spec, same_distribution, planted: pd.DataFrame) -> None:
    """A 5,000-row sample (score error ~0.01) still separates planted drift from none."""
    reference, _ = same_distribution
    exact = detect_drift(reference, planted, spec.dataset, drift_share_threshold=0.5)
    sampled = detect_drift(
        reference, planted, spec.dataset, drift_share_threshold=0.5, sample_rows=5_000
    )
    assert _verdicts(sampled) == _verdicts(exact)


def test_small_reference_uses_evidentlys_p_value_tests(spec: Spec, bank_features, tmp_path):
    """At <= 1,000 reference rows Evidently switches to KS / chi-square / z tests: so do we."""
    reference = bank_features.iloc[30_000:30_800].reset_index(drop=True)
    current = bank_features.iloc[35_000:36_000].reset_index(drop=True)
    fast = detect_drift(reference, current, spec.dataset, drift_share_threshold=0.5)
    full = data_drift_report(reference, current, spec, tmp_path / "drift.html")

    assert {c.method for c in fast.columns.values()} >= {"ks", "chisquare", "z"}
    # pdays holds a value on ~4 % of rows: too few in 800 for a verdict, and it says so.
    assert fast.not_tested["pdays"].startswith("too few values in the reference: ")
    assert fast.not_tested["pdays"].endswith(" non-missing < minimum 100")
    assert _verdicts(fast) == {n: v for n, v in _verdicts(full).items() if n != "pdays"}
    for name, column in fast.columns.items():
        assert column.score == pytest.approx(full.columns[name].score, abs=1e-9), name


def test_saved_profile_gives_the_same_result(
    spec: Spec, same_distribution, planted: pd.DataFrame, tmp_path: Path
) -> None:
    reference, _ = same_distribution
    profile = ReferenceProfile.from_frame(reference, spec.dataset)
    profile.save(tmp_path / "model" / "reference_profile.json")
    loaded = ReferenceProfile.load(tmp_path / "model" / "reference_profile.json")

    from_profile = detect_drift(loaded, planted, spec.dataset, drift_share_threshold=0.5)
    from_frame = detect_drift(reference, planted, spec.dataset, drift_share_threshold=0.5)
    assert from_profile.to_dict() == from_frame.to_dict()


def test_method_choice_follows_evidently() -> None:
    assert evidently_method("numeric", 5_000, 100) == "wasserstein"
    assert evidently_method("numeric", 5_000, 4) == "jensenshannon"
    assert evidently_method("category", 5_000, 2) == "jensenshannon"
    assert evidently_method("numeric", 1_000, 100) == "ks"
    assert evidently_method("numeric", 500, 4) == "chisquare"
    assert evidently_method("category", 500, 2) == "z"


def test_missing_current_column_is_named(spec: Spec, same_distribution) -> None:
    reference, current = same_distribution
    with pytest.raises(MissingColumnsError, match="euribor3m"):
        detect_drift(
            reference, current.drop(columns="euribor3m"), spec.dataset, drift_share_threshold=0.5
        )


def test_html_report_uses_the_verdicts_methods(
    spec: Spec, same_distribution, planted: pd.DataFrame, tmp_path: Path
) -> None:
    reference, _ = same_distribution
    verdict = detect_drift(reference, planted, spec.dataset, drift_share_threshold=0.5)
    html = tmp_path / "production_drift.html"
    evidently_value_drift(
        reference, planted, spec.dataset, html, verdict=verdict, sample_rows=2_000
    )
    text = html.read_text()
    assert "Wasserstein distance (normed)" in text and "Jensen-Shannon distance" in text
    assert "age" in text and "marital" in text


def test_profile_of_a_retyped_column_is_not_tested(spec: Spec, same_distribution) -> None:
    reference, current = same_distribution
    profile = ReferenceProfile.from_frame(reference, spec.dataset)
    raw = spec.dataset.model_dump()
    raw["columns"]["previous"] = {"type": "category"}
    retyped = type(spec.dataset).model_validate(raw)
    current = current.assign(previous=current["previous"].map(str, na_action="ignore"))
    result = detect_drift(profile, current, retyped, drift_share_threshold=0.5)

    assert result.not_tested == {
        "previous": "type mismatch: the reference profile has it as numeric, the spec "
        "declares category (rebuild the profile)"
    }
    assert len(result.columns) == len(spec.dataset.feature_columns) - 1
    assert result.verdict == "no drift"


def test_every_column_has_a_status_and_small_windows_no_verdict(
    spec: Spec, same_distribution
) -> None:
    """All-missing, sparse and too-small windows: no column silently left out, and no
    dataset verdict below the minimum row count."""
    reference, current = same_distribution
    window = current.iloc[:150].assign(age=None, job=None)
    result = detect_drift(reference, window, spec.dataset, drift_share_threshold=0.3)

    assert result.dataset_drift is None and result.verdict == "insufficient data"
    assert result.insufficient == "insufficient data: 150 rows < minimum 200"
    assert result.columns == {}
    assert set(result.not_tested) == set(spec.dataset.feature_columns)
    assert result.not_tested["age"] == "all missing in the current data (150 rows)"
    assert result.not_tested["job"] == "all missing in the current data (150 rows)"
    assert result.not_tested["marital"] == "the current data has 150 rows < minimum 200"
    assert result.to_dict()["dataset_drift"] is None
