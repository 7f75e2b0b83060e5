"""The fairness gate on real models (fairlearn figures): a planted bias fails it, naming the
figures; a model blind to the sensitive column passes; small groups are reported, not judged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from ct_platform.data.training_set import TrainingSet
from ct_platform.settings import Spec
from ct_platform.training.fairness import fairness_gate
from ct_platform.training.fit import fit_pipeline


def _fairness(spec: Spec, **settings: object) -> Spec:
    raw = spec.model_dump()
    raw["gates"]["fairness"] |= settings
    return Spec.model_validate(raw)


def _quick(spec: Spec) -> Spec:
    """Fewer boosting rounds: the planted labels are easy, and the box is shared."""
    raw = spec.model_dump()
    raw["model"]["params"] |= {"max_iter": 30}
    return Spec.model_validate(raw)


def _relabel(frame: pd.DataFrame, label: np.ndarray) -> pd.DataFrame:
    out = frame.copy()
    out["y"] = label.astype(out["y"].dtype)
    return out


@pytest.fixture(scope="module")
def biased(bank_window: TrainingSet, bank_spec: Spec) -> tuple[Pipeline, pd.DataFrame]:
    """Trained where the label is being single (the model learns the sensitive column)."""
    train, holdout = bank_window.train, bank_window.holdout
    label = (train["marital"] == "single").to_numpy()
    model = fit_pipeline(_relabel(train, label), _quick(bank_spec))
    return model, _relabel(holdout, (holdout["marital"] == "single").to_numpy())


@pytest.fixture(scope="module")
def blind(bank_window: TrainingSet, bank_spec: Spec) -> tuple[Pipeline, pd.DataFrame]:
    """The label follows age only, and marital is shuffled: nothing links the two."""
    rng = np.random.default_rng(0)

    def unlinked(frame: pd.DataFrame) -> pd.DataFrame:
        out = _relabel(frame, (frame["age"] > 40).to_numpy())
        out["marital"] = rng.permutation(out["marital"].to_numpy())
        return out

    train, holdout = unlinked(bank_window.train), unlinked(bank_window.holdout)
    return fit_pipeline(train, _quick(bank_spec)), holdout


def test_planted_bias_fails_with_the_figures_named(biased, bank_spec):
    model, holdout = biased
    spec = _fairness(bank_spec, blocking=True, threshold=0.1, min_group_rows=100)

    gate = fairness_gate(model, holdout, spec)

    assert not gate.passed and gate.blocking
    # Single rows are all predicted positive, the others none: the selection rates differ by 1.
    assert gate.metadata["marital/demographic_parity_difference"] == pytest.approx(1.0, abs=0.02)
    assert gate.metadata["marital/single/selection_rate"] > 0.98
    assert gate.metadata["marital/married/selection_rate"] < 0.02
    assert "marital: demographic_parity_difference 1.000 over 0.1" in gate.description
    # Each group holds one class only: the figures that need both are not judged, and say so.
    assert "not judged (fewer than two groups to compare): equalized_odds_difference" in (
        gate.description
    )


def test_model_blind_to_the_group_passes(blind, bank_spec):
    model, holdout = blind
    spec = _fairness(bank_spec, blocking=True, threshold=0.1, min_group_rows=100)

    gate = fairness_gate(model, holdout, spec)

    assert gate.passed, gate.description
    for figure in ("demographic_parity_difference", "equalized_odds_difference", "metric_gap"):
        assert 0 <= gate.metadata[f"marital/{figure}"] < 0.1
    assert gate.metadata["marital/married/roc_auc"] > 0.95


def test_small_group_is_reported_not_judged(blind, bank_spec):
    model, holdout = blind
    unknown_rows = int((holdout["marital"] == "unknown").sum())
    assert 0 < unknown_rows < 100  # the bank holdout's "unknown" marital status is rare
    spec = _fairness(bank_spec, min_group_rows=100)

    gate = fairness_gate(model, holdout, spec)

    assert f"groups under 100 rows, not judged: unknown ({unknown_rows} rows)" in gate.description
    assert gate.metadata["marital/unknown/rows"] == unknown_rows
    assert "marital/unknown/selection_rate" not in gate.metadata


def test_fewer_than_two_judged_groups_is_unknown_not_a_pass(blind, bank_spec):
    model, holdout = blind
    spec = _fairness(bank_spec, blocking=True, min_group_rows=len(holdout))

    gate = fairness_gate(model, holdout, spec)

    assert not gate.passed and not gate.blocking  # a warning: the holdout cannot decide
    assert gate.description.startswith("unknown: nothing could be judged")


def test_each_sensitive_column_is_judged(blind, bank_spec):
    model, holdout = blind
    raw = bank_spec.model_dump()
    raw["dataset"]["sensitive_columns"] = ["marital", "education"]
    spec = Spec.model_validate(raw)
    assert spec.dataset.sensitive == ["marital", "education"]  # the single key is kept too

    gate = fairness_gate(model, holdout, spec)

    assert "marital/demographic_parity_difference" in gate.metadata
    assert "education/demographic_parity_difference" in gate.metadata
    assert "education: " in gate.description


@pytest.fixture(scope="module")
def education(bank_window: TrainingSet, bank_spec: Spec) -> tuple[Pipeline, pd.DataFrame, Spec]:
    """The newcomer's multiclass project: education (8 labels) from the bank data, ROC AUC."""
    raw = bank_spec.model_dump()
    raw["model"]["params"] |= {"max_iter": 5}  # 8 trees a round: kept short for the box
    labels = raw["dataset"]["columns"].pop("education")["categories"]
    raw["dataset"] |= {"target": "education", "target_labels": labels}
    spec = Spec.model_validate(raw)
    model = fit_pipeline(bank_window.train, spec)
    assert len(model.classes_) == 8
    return model, bank_window.holdout, spec


def _without(holdout: pd.DataFrame, groups: list[str], keep: object) -> pd.DataFrame:
    """`holdout` where the rows of `groups` keep only the education values `keep` accepts."""
    dropped = holdout["marital"].isin(groups) & ~holdout["education"].map(keep)
    return holdout[~dropped]


def test_multiclass_groups_lacking_a_class_are_judged_on_the_classes_they_hold(education):
    model, holdout, spec = education
    # The newcomer's holdout: divorced and single lack a class (7 of 8), married has all.
    holdout = _without(holdout, ["divorced", "single"], lambda e: e != "illiterate")
    married = holdout[holdout["marital"] == "married"]
    if "illiterate" not in set(married["education"]):  # make married hold every class
        holdout = pd.concat([holdout, married.head(1).assign(education="illiterate")])

    gate = fairness_gate(model, holdout, _fairness(spec, metric_gap=1.0, min_group_rows=100))

    figures = {}
    for group in ("divorced", "married", "single"):
        rows = holdout[holdout["marital"] == group]
        proba = model.predict_proba(rows[spec.dataset.feature_columns])
        present = [i for i, c in enumerate(model.classes_) if (rows["education"] == c).any()]
        # One-vs-rest macro over the classes present, each class's AUC by scikit-learn.
        expected = np.mean(
            [roc_auc_score(rows["education"] == model.classes_[i], proba[:, i]) for i in present]
        )
        figures[group] = gate.metadata[f"marital/{group}/roc_auc"]
        assert figures[group] == pytest.approx(expected)
    assert gate.metadata["marital/divorced/classes_absent"] == "illiterate"
    assert "marital/married/classes_absent" not in gate.metadata
    assert gate.metadata["marital/metric_gap/groups_judged"] == 3
    gap = max(figures.values()) - min(figures.values())
    assert gate.metadata["marital/metric_gap"] == pytest.approx(gap)
    assert gap > 0 and "metric_gap 0.000" not in gate.description
    assert "roc_auc over the classes present (divorced lacks illiterate, single lacks " in (
        gate.description
    )


def test_multiclass_with_one_group_judged_is_unknown_not_a_pass(education):
    model, holdout, spec = education
    # Divorced and single hold one class each: their ROC AUC is undefined, married's alone
    # is left. It used to pass with "metric_gap 0.000".
    holdout = _without(holdout, ["divorced", "single"], lambda e: e == "university.degree")

    gate = fairness_gate(model, holdout, _fairness(spec, blocking=True, min_group_rows=100))

    assert not gate.passed and not gate.blocking
    assert gate.description.startswith("unknown: nothing could be judged")
    assert "metric_gap 0.000" not in gate.description
    assert "metric_gap (1 group(s) with a defined roc_auc)" in gate.description
    assert (
        "roc_auc undefined, group not judged: divorced (one class only (university.degree)), "
        "single (one class only (university.degree))"
    ) in gate.description
    assert gate.metadata["marital/metric_gap/groups_judged"] == 1
    assert "marital/metric_gap" not in gate.metadata
