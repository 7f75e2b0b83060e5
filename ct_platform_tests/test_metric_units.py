"""Settings in a metric's units mean something for the task they are used with.

A regression spec (the bank data's call `duration`, seconds, judged by MAE) gets defaults that
fit it, and a figure in the wrong units is refused when the spec loads, naming the key, the
task and a sensible value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from scipy.stats import norm

from ct_platform.deployment.analysis import required_sample_size
from ct_platform.settings import AbSpec, Spec, SpecError, load_spec

Edit = Callable[[dict], None]


@pytest.fixture
def edited_spec(spec_file: Path) -> Callable[[Edit], Spec]:
    """Apply an edit to the bank spec's YAML, then load it."""

    def load_edited(edit: Edit) -> Spec:
        raw = yaml.safe_load(spec_file.read_text())
        edit(raw)
        spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_spec(spec_file)

    return load_edited


def as_regression(*edits: Edit) -> Edit:
    """The newcomer's spec: `duration` from the bank features, MAE, his own gate figures."""

    def edit(raw: dict) -> None:
        dataset = raw["dataset"]
        dataset.update(target="duration", task="regression", drop_columns=["y"])
        dataset.pop("target_labels")
        raw["evaluation"]["primary_metric"] = "mae"
        raw["gates"]["metric_floor"] = {"threshold": 250}
        raw["gates"]["champion_regression"] = {"policy": "non_inferiority"}
        raw["gates"]["fairness"] = {"threshold": 0.1, "metric_gap": 30}
        raw["monitoring"].pop("decay_tolerance")
        for more in edits:
            more(raw)

    return edit


def setting(path: str, value: object) -> Edit:
    def edit(raw: dict) -> None:
        *parents, key = path.split(".")
        node = raw
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value

    return edit


def test_regression_defaults_are_relative_to_the_reference(edited_spec) -> None:
    spec = edited_spec(as_regression())

    assert spec.monitoring.decay_tolerance is None
    assert spec.monitoring.decay_margin("mae", 189.11) == pytest.approx(9.4555)  # 5 %
    assert spec.gates.champion_regression.margin("mae", 189.11) == pytest.approx(1.8911)  # 1 %


def test_classification_defaults_keep_their_metric_units(edited_spec) -> None:
    def unset(raw: dict) -> None:
        raw["monitoring"].pop("decay_tolerance")
        raw["gates"]["champion_regression"].pop("tolerance")

    spec = edited_spec(unset)

    assert spec.monitoring.decay_margin("roc_auc", 0.79) == 0.05
    assert spec.gates.champion_regression.margin("roc_auc", 0.79) == 0.01


def test_figures_given_apply_as_they_are(edited_spec) -> None:
    spec = edited_spec(
        as_regression(
            setting("monitoring.decay_tolerance", 0.05),
            setting("gates.champion_regression.tolerance", 50),
        )
    )
    assert spec.monitoring.decay_margin("mae", 189.11) == 0.05
    assert spec.gates.champion_regression.margin("mae", 189.11) == 50


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            setting("gates.metric_floor.threshold", 250),
            r"gates\.metric_floor\.threshold: 250 is in roc_auc's units, which run to 1 at "
            r"most for task classification with primary_metric roc_auc; .* e\.g\. 0\.7",
        ),
        (
            setting("monitoring.decay_tolerance", 2.67),
            r"monitoring\.decay_tolerance: 2\.67 is in roc_auc's units, .* e\.g\. 0\.05",
        ),
        (
            setting("gates.fairness.metric_gap", 30),
            r"gates\.fairness\.metric_gap: 30 is in roc_auc's units, .* e\.g\. 0\.1",
        ),
        (
            setting("gates.champion_regression.tolerance", 50),
            r"gates\.champion_regression\.tolerance: 50 is in roc_auc's units, .* e\.g\. 0\.01",
        ),
        (
            as_regression(setting("deployment.ab.minimum_effect", 10)),
            r"deployment\.ab\.minimum_effect: 10 for task regression with primary_metric mae "
            r"is a fraction of stable's mean absolute error \(1000% of it here\), not a figure "
            r"in the target's units; e\.g\. 0\.05",
        ),
        (
            as_regression(setting("deployment.analysis.metric_tolerance", 5)),
            r"deployment\.analysis\.metric_tolerance: 5 for task regression .* e\.g\. 0\.05",
        ),
        (
            as_regression(setting("gates.fairness", {"threshold": 0.1})),
            r"gates\.fairness\.metric_gap is unset for task regression with primary_metric "
            r"mae: .* gates\.fairness\.threshold \(0\.1\) is a rate; set it in the target's "
            r"units",
        ),
    ],
    ids=[
        "floor-250-on-auc",
        "decay-2.67-on-auc",
        "metric-gap-30-on-auc",
        "margin-50-on-auc",
        "ab-effect-in-seconds",
        "analysis-tolerance-in-seconds",
        "regression-metric-gap-unset",
    ],
)
def test_figures_in_the_wrong_units_are_refused_at_load(edited_spec, edit, message) -> None:
    with pytest.raises(SpecError, match=message):
        edited_spec(edit)


def test_the_default_ab_test_for_regression_can_finish() -> None:
    """The newcomer's figures: stable's absolute errors average 189.11 s with an sd of 200 s.
    `minimum_effect` 0.05 is a 5 % change of that MAE (9.46 s): 7,024 labelled requests per
    arm at the default alpha 0.05 and power 0.8 (it was 251,163,537 when the 0.05 was read
    as seconds), ten times the classification default's 681."""
    needed = required_sample_size(AbSpec(), regression=True, outcome_sd=200, outcome_mean=189.11)

    effect_size = 0.05 * 189.11 / 200
    by_hand = (norm.ppf(0.975) + norm.ppf(0.8)) ** 2 * 2 / effect_size**2
    assert needed == math.ceil(by_hand) == 7024
    assert required_sample_size(AbSpec(), regression=False, outcome_sd=None) == 681
    with pytest.raises(ValueError, match="needs stable's outcome_mean and outcome_sd"):
        required_sample_size(AbSpec(), regression=True, outcome_sd=200, outcome_mean=None)
