"""What MLflow shows of an evaluation: gate reasons in the version's description, the
`challenger` alias off a rejected version, links to the Dagster run and to the reports."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline

from ct_platform.defs.metadata import report_links
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry, dagster_run_url, mlflow_ui_url
from ct_platform.registry.versions import CHALLENGER, CHAMPION
from ct_platform.settings import Spec
from ct_platform.training.gates import GateResult
from ct_platform_tests.registry.conftest import log

FLOOR_FAILED = GateResult(
    "metric_floor", False, True, "roc_auc 0.4907 misses the floor 0.5000", {"value": 0.4907}
)
SIZE_PASSED = GateResult("model_size", True, True, "model is 0.31 MB; limit 50.00 MB")
LATENCY_WARNED = GateResult("latency", False, False, "p50 31.2 ms over 25.0 ms")


def _description(registry: ModelRegistry, version: int) -> str:
    client = MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    return client.get_model_version(registry.model_name, str(version)).description


def test_rejected_version_loses_challenger_and_says_why(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, bank_spec: Spec
) -> None:
    champion = log(registry, fitted, train_frame, fingerprint="1" * 64)
    set_champion(registry, champion.version, bank_spec)
    rejected = log(registry, fitted, train_frame, fingerprint="2" * 64)
    assert registry.alias_version(CHALLENGER).version == rejected.version

    registry.describe_verdict(
        rejected.version, promotable=False, gates=[FLOOR_FAILED, SIZE_PASSED, LATENCY_WARNED]
    )

    assert registry.alias_version(CHALLENGER) is None
    assert registry.alias_version(CHAMPION).version == champion.version
    assert registry.version(rejected.version).aliases == []
    assert _description(registry, rejected.version) == (
        "**Rejected**: blocking gate(s) failed: metric_floor.\n"
        "\n"
        "- metric_floor: FAIL (blocking): roc_auc 0.4907 misses the floor 0.5000\n"
        "- model_size: pass (blocking): model is 0.31 MB; limit 50.00 MB\n"
        "- latency: FAIL (warning only): p50 31.2 ms over 25.0 ms\n"
        "\n"
        "Trained by Dagster run [dagster-run-1](http://127.0.0.1:3000/runs/dagster-run-1)."
    )


def test_promotable_version_keeps_challenger(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    info = log(registry, fitted, train_frame, fingerprint="3" * 64)
    registry.describe_verdict(info.version, promotable=True, gates=[SIZE_PASSED, LATENCY_WARNED])
    assert registry.alias_version(CHALLENGER).version == info.version
    assert _description(registry, info.version).startswith(
        "**Promotable**: every blocking gate passed.\n"
    )


def test_rejecting_an_older_version_leaves_the_newer_challenger(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    older = log(registry, fitted, train_frame, fingerprint="4" * 64)
    newer = log(registry, fitted, train_frame, fingerprint="5" * 64)
    registry.describe_verdict(older.version, promotable=False, gates=[FLOOR_FAILED])
    assert registry.alias_version(CHALLENGER).version == newer.version


def test_links_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dagster_run_url("abc") == "http://127.0.0.1:3000/runs/abc"
    assert mlflow_ui_url() == "http://127.0.0.1:5000"
    monkeypatch.setenv("DAGSTER_PORT", "3100")
    monkeypatch.setenv("MLFLOW_PORT", "5100")
    assert dagster_run_url("abc") == "http://127.0.0.1:3100/runs/abc"
    assert mlflow_ui_url() == "http://127.0.0.1:5100"
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "https://dagster.example.org/")
    monkeypatch.setenv("MLFLOW_UI_URL", "https://mlflow.example.org")
    assert dagster_run_url("abc") == "https://dagster.example.org/runs/abc"
    assert mlflow_ui_url() == "https://mlflow.example.org"


def test_reports_link_to_mlflow_artifact_view_over_http(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, tmp_path
) -> None:
    info = log(registry, fitted, train_frame, fingerprint="6" * 64)
    report = tmp_path / "model_quality.html"
    report.write_text("<html>report</html>")
    registry.log_artifact(info.run_id, report, artifact_path="reports")

    metadata = report_links(
        {"report/model_quality": report},
        lambda path: registry.artifact_view_url(info.run_id, f"reports/{path.name}"),
    )

    # MLflow 3's UI route for a run's artifacts (`getRunPageRoute(exp, run, artifactPath)`).
    assert metadata["report/model_quality"].url == (
        f"http://127.0.0.1:5000/#/experiments/{registry.experiment_id}/runs/{info.run_id}"
        "/artifacts/reports/model_quality.html"
    )
    assert metadata["report/model_quality_file"].path == str(report.resolve())
    listed = MlflowClient(registry.tracking_uri).list_artifacts(info.run_id, "reports")
    assert [a.path for a in listed] == ["reports/model_quality.html"]


def test_a_report_only_on_this_machine_is_a_path_not_a_file_url(tmp_path) -> None:
    report = tmp_path / "drift.html"
    metadata = report_links({"report": report})
    assert list(metadata) == ["report"]
    assert metadata["report"].path == str(report.resolve())
