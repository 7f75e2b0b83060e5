"""Model card rendering: every section, values escaped, HTML through markdown-it-py."""

from __future__ import annotations

import pytest
import yaml

from ct_platform.governance.card import (
    CardFacts,
    DataWindow,
    GateLine,
    _gate_lines,
    card_files,
    gather_facts,
    render_markdown,
)
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.serving.bundle import read_meta
from ct_platform.settings import Paths, load_spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.fit import fit_pipeline
from ct_platform.training.gates import onnx_parity_gate
from ct_platform_tests.training.conftest import _synthetic_spec_dict, synthetic_frame

SECTIONS = (
    "## Intended use",
    "## Data window",
    "## Fingerprint and lineage",
    "## Metrics",
    "## Per-group figures",
    "## Gates",
    "## ONNX parity",
    "## Resources",
    "## Approval",
    "## Limitations",
)


def facts(**changes: object) -> CardFacts:
    base = dict(
        model="bank",
        version=3,
        run_id="abc123",
        created_at="2026-11-29T10:00:00+00:00",
        aliases=("champion",),
        tags={
            "fingerprint": "f" * 64,
            "ct.semver": "1.2.0",
            "ct.refit_of": "2",
            "dagster.run_id": "run-9",
            "dagster.run_url": "http://dagster/runs/run-9",
            "ct.gates_passed": "true",
        },
        metrics={
            "holdout_roc_auc": 0.6512,
            "holdout_roc_auc_ci_low": 0.61,
            "holdout_roc_auc_ci_high": 0.69,
            "group/married/roc_auc": 0.64,
            "group/married/rows": 900.0,
            "group/single/roc_auc": 0.67,
            "group/single/rows": 400.0,
        },
        params={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier"},
        window=DataWindow(("batch-1.csv", "batch-2.csv"), 6400, 1600, note="no time column"),
        gates=(
            GateLine("metric_floor", "pass", "roc_auc 0.6512 meets the floor 0.5000"),
            GateLine("latency", "fail", "p50 31 ms over 25 ms"),
        ),
        approval={"ct.approval": "approved", "ct.approval.by": "alice"},
        intended_use="Rank <script>alert(1)</script> clients | by | score",
        limitations="One bank, 2008-2010.",
        primary_metric="roc_auc",
        mlflow_run_url="http://mlflow/#/runs/abc123",
    )
    return CardFacts(**{**base, **changes})


def test_every_section_with_the_versions_figures():
    markdown = render_markdown(facts())
    positions = [markdown.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "# Model card: bank version 3" in markdown
    assert "| holdout\\_roc\\_auc | 0.6512 | 0.61 to 0.69 |" in markdown
    assert "| married | 0.64 | 900 |" in markdown
    assert "| latency | fail | p50 31 ms over 25 ms |" in markdown
    assert "**Semantic version**: 1.2.0" in markdown
    assert "**Refit of version**: 2" in markdown
    assert "**Rows**: 8000 (6400 train, 1600 holdout)" in markdown
    assert "Not measured yet" in markdown  # no bundle yet: parity is measured at export
    assert "**By**: alice" in markdown


def test_html_escapes_values():
    page = card_files(facts())["card.html"].decode()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<table>" in page and "<h2>Gates</h2>" in page
    # A pipe in a value does not split a table cell or the text.
    assert "clients | by | score" in page


def test_gate_reason_tag_wins_over_the_description():
    tags = {
        "ct.gate.metric_floor": "pass",
        "ct.gate.metric_floor.reason": "from the tag",
        "ct.gate.latency": "fail",
    }
    description = (
        "**Promotable**\n\n- metric_floor: pass (blocking): from the description\n"
        "- latency: FAIL (warning only): p50 31.0 ms exceeds 25 ms\n"
    )
    lines = {line.name: line for line in _gate_lines(tags, description)}
    assert lines["metric_floor"].reason == "from the tag"
    assert lines["latency"] == GateLine("latency", "fail", "p50 31.0 ms exceeds 25 ms")
    # The bundle's gates are judged after export: said so, never silently missing.
    assert lines["bundle_secrets"].verdict == "not judged yet"
    assert "once it is exported" in lines["vulnerabilities"].reason


def test_bundle_gate_verdicts_from_their_tags_and_none_before_any_verdict():
    tags = {
        "ct.gate.metric_floor": "pass",
        "ct.gate.bundle_secrets": "fail",
        "ct.gate.bundle_secrets.reason": "1 secret in bundle.json",
        "ct.gate.vulnerabilities": "fail",
        "ct.gate.vulnerabilities.reason": "unknown: no advisory source answered",
    }
    lines = _gate_lines(tags, "")
    assert [line.name for line in lines] == ["bundle_secrets", "metric_floor", "vulnerabilities"]
    assert lines[0] == GateLine("bundle_secrets", "fail", "1 secret in bundle.json")
    assert _gate_lines({}, "") == ()


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_parity_lines_match_the_task_of_a_real_bundle(task, tmp_path):
    """Built through the real path: a fitted pipeline logged to a real MLflow store, its
    bundle exported with ONNX parity measured. "labels identical" is a classifier's line."""
    spec = load_spec(_spec_file(tmp_path, task))
    frame = synthetic_frame(400, None if task == "regression" else 3)
    model = fit_pipeline(frame, spec)
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", spec.model.name, "ct-tests")
    info = registry.log_candidate(
        model,
        train=frame,
        params={},
        metrics={"holdout_r2": 0.9} if task == "regression" else {"holdout_f1": 0.8},
        fingerprint="f" * 64,
        dagster_run_id=None,
    )
    bundle = read_meta(
        build_bundle(
            model,
            spec,
            name=info.name,
            version=info.version,
            fingerprint="f" * 64,
            holdout=frame.tail(100),
            directory=tmp_path / "bundle",
        )
    )

    card = render_markdown(gather_facts(registry, info.version, spec, Paths.from_env(), bundle))

    parity = card.split("## ONNX parity")[1].split("## Resources")[0]
    assert "| max abs diff |" in parity
    assert ("labels identical" in parity) == (task == "classification")
    assert ("labels_identical" in onnx_parity_gate(bundle, spec).metadata) == (
        task == "classification"
    )
    metrics = card.split("## Metrics")[1].split("## Per-group figures")[0]
    assert ("- **r2**: coefficient of determination" in metrics) == (task == "regression")
    assert "undefined" not in metrics  # every figure shown is defined
    assert ("- **roc\\_auc**: two classes" in metrics) == (task == "classification")


def _spec_file(tmp_path, task: str):
    metric = "r2" if task == "regression" else "f1"
    estimator = "sklearn.linear_model.Ridge"
    if task == "classification":
        estimator = "sklearn.linear_model.LogisticRegression"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_synthetic_spec_dict(task, estimator, metric)))
    return path


def test_regression_card_states_what_its_figures_are():
    """The newcomer's version: r2 below 0 flagged, notes true for the figures shown,
    intervals and the naive baseline next to each metric, gate figures apart."""
    from ct_platform.governance.card import TABLE_NOTES
    from ct_platform.training.evaluate import METRIC_DEFINITIONS

    metrics = {
        "holdout_mae": 189.1141,
        "holdout_mae_ci_low": 183.2,
        "holdout_mae_ci_high": 195.0,
        "holdout_baseline_mae": 163.77,
        "holdout_r2": -0.0719,
        "holdout_r2_ci_low": -0.11,
        "holdout_r2_ci_high": -0.04,
        "holdout_baseline_r2": -0.0012,
        "holdout_rmse": 270.5,
        "holdout_rmse_ci_low": 255.1,
        "holdout_rmse_ci_high": 286.0,
        "holdout_baseline_rmse": 261.3,
        "gate.baseline.p_value": 1e-9,
        "gate.metric_floor.threshold": 250.0,
    }
    notes = {m: METRIC_DEFINITIONS[m] for m in ("mae", "rmse", "r2")}
    # A run before interval methods were recorded (r2 here) shows its bounds alone.
    methods = {"holdout_mae": "t", "holdout_rmse": "bootstrap_normal"}
    markdown = render_markdown(
        facts(
            metrics=metrics,
            metric_notes=notes,
            primary_metric="mae",
            gates=(),
            interval_methods=methods,
        )
    )
    metrics_part = markdown[markdown.index("## Metrics") : markdown.index("## Per-group")]
    assert "| holdout\\_mae | 189.1 | 183.2 to 195 \\(t\\) | 163.8 |" in metrics_part
    assert "| holdout\\_r2 | -0.0719 | -0.11 to -0.04 | -0.0012 |" in metrics_part
    assert "| holdout\\_rmse | 270.5 | 255.1 to 286 \\(bootstrap\\_normal\\) | 261.3 |" in (
        metrics_part
    )
    assert "not recorded" not in metrics_part
    assert "**Warning**: holdout\\_r2 is -0.0719: the model predicts the holdout worse" in (
        metrics_part
    )
    # No boilerplate contradicting the table: r2 is defined here, so no "undefined" note.
    assert "undefined" not in metrics_part
    assert "below 0 is worse than it" in metrics_part
    assert "naive baseline" in metrics_part and "DummyRegressor" in metrics_part
    for column in TABLE_NOTES:
        assert f"- **{column}**: " in metrics_part
    # Gate figures are not model metrics; with no gate verdict, none shows.
    assert "gate." not in metrics_part and "baseline\\_mae" not in metrics_part
    judged = render_markdown(
        facts(metrics=metrics, gates=(GateLine("baseline", "fail", "mae 189.1141 is not"),))
    )
    gates_part = judged[judged.index("## Gates") : judged.index("## ONNX parity")]
    assert "Figures the gates recorded:" in gates_part
    assert "| baseline | p\\_value | 1e-09 |" in gates_part
    assert "| metric\\_floor | threshold | 250 |" in gates_part


def test_an_undefined_figure_says_why():
    from ct_platform.training.evaluate import METRIC_DEFINITIONS

    markdown = render_markdown(
        facts(metrics={"holdout_r2": float("nan")}, metric_notes={"r2": METRIC_DEFINITIONS["r2"]})
    )
    assert "| holdout\\_r2 | undefined | not recorded |  |" in markdown
    assert "undefined here: fewer than two rows" in markdown
