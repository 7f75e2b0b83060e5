"""ModelRegistry against a real SQLite MLflow store: versions, tags, aliases, round trips."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import Model
from mlflow.types.utils import _infer_schema
from sklearn.pipeline import Pipeline

from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry import skops_types
from ct_platform.registry.mlflow_registry import (
    ChampionAliasError,
    ModelRegistry,
    _dataset_input,
    default_tracking_uri,
    sqlite_artifact_root,
    sqlite_database,
)
from ct_platform.registry.versions import CHALLENGER, CHAMPION, ModelVersionInfo
from ct_platform.settings import Spec
from ct_platform.training.preparation import raw_like
from ct_platform_tests.registry.conftest import artifact_files, log


def test_default_tracking_uri_is_sqlite_under_ct_home(
    ct_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLAlchemy's form for an absolute file: four slashes.
    assert (
        default_tracking_uri()
        == f"sqlite:////{(ct_home / 'mlflow' / 'mlflow.db').relative_to('/')}"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert default_tracking_uri() == "http://mlflow.internal:5000"


@pytest.mark.parametrize(
    ("uri", "database"),
    [
        ("sqlite:////srv/ct/mlflow/mlflow.db", "/srv/ct/mlflow/mlflow.db"),
        ("sqlite:////srv/my%20ct/mlflow.db", "/srv/my ct/mlflow.db"),
        ("sqlite+pysqlite:////srv/ct/mlflow.db", "/srv/ct/mlflow.db"),
        ("sqlite:///relative/mlflow.db", "CWD/relative/mlflow.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("http://mlflow.internal:5000", None),
        ("postgresql://user@db/mlflow", None),
        ("/srv/ct/mlruns", None),
        ("databricks", None),
    ],
)
def test_sqlite_uris_are_read_by_sqlalchemy_rules(
    uri: str, database: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = None if database is None else Path(database.replace("CWD", str(tmp_path)))
    assert sqlite_database(uri) == expected
    root = sqlite_artifact_root(uri)
    assert root == (None if expected is None else expected.parent / "artifacts")
    assert root is None or not str(root).startswith("//")  # not "//srv/..." (a host "srv")


def test_absolute_store_keeps_plain_file_artifact_locations(
    tmp_path: Path, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    """The issue's example: `sqlite:////abs/...` gave artifact root `//abs/.../artifacts`."""
    store = tmp_path / "store"
    uri = f"sqlite:////{(store / 'mlflow.db').relative_to('/')}"
    registry = ModelRegistry(uri, "four_slashes", "bank")
    info = log(registry, fitted, train_frame, fingerprint="4" * 64)
    client = MlflowClient(uri, registry_uri=uri)
    for experiment_id in ("0", registry.experiment_id):
        location = client.get_experiment(experiment_id).artifact_location
        assert location.startswith(f"file://{store}/artifacts"), location
    source = client.get_model_version_download_uri(registry.model_name, str(info.version))
    assert source.startswith(f"file://{store}/artifacts/bank/"), source


def test_default_store_keeps_every_artifact_under_ct_home(
    ct_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fitted: Pipeline,
    train_frame: pd.DataFrame,
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    registry = ModelRegistry(default_tracking_uri(), "bank_marketing", "bank")
    log(registry, fitted, train_frame, fingerprint="f" * 64)
    # Logging borrows MLflow's global URI; it must not leave MLFLOW_TRACKING_URI behind.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(default_tracking_uri())
    artifacts = ct_home / "mlflow" / "artifacts"
    for experiment_id in ("0", registry.experiment_id):
        location = client.get_experiment(experiment_id).artifact_location
        assert Path(location.removeprefix("file:")).resolve().is_relative_to(artifacts)
    assert "model.skops" in artifact_files(artifacts)
    assert os.listdir(cwd) == []  # no ./mlruns, no ./mlflow.db


@pytest.fixture(scope="module")
def logged(
    tracking_uri: str, fitted: Pipeline, train_frame: pd.DataFrame
) -> tuple[ModelRegistry, ModelVersionInfo]:
    """One candidate logged once, inspected by the read-only tests below."""
    registry = ModelRegistry(tracking_uri, "logged_once", experiment="ct-tests")
    return registry, log(registry, fitted, train_frame, fingerprint="a" * 64)


def test_log_candidate_registers_a_challenger_version(
    logged: tuple[ModelRegistry, ModelVersionInfo],
) -> None:
    registry, info = logged
    assert info.version == 1
    assert info.aliases == [CHALLENGER]
    assert info.fingerprint == "a" * 64
    assert info.metrics == {"roc_auc": 0.79, "accuracy": 0.9}
    dagster_url = "http://127.0.0.1:3000/runs/dagster-run-1"
    assert info.tags == {
        "fingerprint": "a" * 64,
        "dagster.run_id": "dagster-run-1",
        "dagster.run_url": dagster_url,
        "ct.batches": "b-0001,b-0002",
    }
    client = MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    run = client.get_run(info.run_id)
    assert run.data.tags["fingerprint"] == "a" * 64
    assert run.data.tags["dagster.run_id"] == "dagster-run-1"
    assert run.data.tags["dagster.run_url"] == dagster_url
    # The run's and the version's descriptions link the Dagster run that trained them.
    assert f"[dagster-run-1]({dagster_url})" in run.data.tags["mlflow.note.content"]
    description = client.get_model_version(registry.model_name, "1").description
    assert f"[dagster-run-1]({dagster_url})" in description
    assert run.data.params["estimator__max_iter"] == "150"  # from the model itself
    assert run.data.params["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["dataset"]


def test_dataset_input_schema_is_what_mlflow_infers_from_every_row(
    train_frame: pd.DataFrame,
) -> None:
    """The schema comes from a few rows, yet says what inference over all of them says:
    the column types, and which columns miss a value somewhere (pdays, the sentinel made
    NaN; a category missing only in the last row; one missing only in the first)."""
    frame = train_frame.copy()
    frame.loc[frame.index[-1], "job"] = None
    frame.loc[frame.index[0], "education"] = None
    frame["all_missing"] = np.nan
    dataset = _dataset_input(frame)
    logged = json.loads(dataset.to_dict()["schema"])
    expected = _infer_schema(frame)
    assert dataset.schema == expected
    assert logged == {"mlflow_colspec": expected.to_dict()}
    optional = {spec.name for spec in expected.inputs if not spec.required}
    assert {"pdays", "job", "education", "all_missing"} <= optional
    assert json.loads(dataset.to_dict()["profile"])["num_rows"] == len(frame)


def test_logged_model_has_skops_format_and_signature_and_serves_through_pyfunc(
    logged: tuple[ModelRegistry, ModelVersionInfo],
    bank_spec: Spec,
    fitted: Pipeline,
    train_frame: pd.DataFrame,
) -> None:
    registry, info = logged
    client = MlflowClient(registry.tracking_uri)
    source = client.get_model_version_download_uri(registry.model_name, str(info.version))
    model = Model.load(str(Path(url2pathname(urlparse(source).path)) / "MLmodel"))
    sklearn_flavor = model.flavors["sklearn"]
    assert sklearn_flavor["serialization_format"] == "skops"
    assert sklearn_flavor["skops_trusted_types"] == [
        "ct_platform.training.preparation.SpecPreparation",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ]
    inputs = model.signature.inputs
    assert inputs.input_names() == bank_spec.dataset.feature_columns
    # Types follow the data: spec `int` columns are long (pdays too: its sentinel 999 is an
    # integer in raw data), floats double, categories string.
    expected = {"int": "long", "float": "double", "category": "string"}
    types = zip(inputs.input_names(), inputs.input_types(), strict=True)
    assert {name: kind.name for name, kind in types} == {
        name: expected[bank_spec.dataset.columns[name].type]
        for name in bank_spec.dataset.feature_columns
    }
    # No input example: logging one makes log_model load and predict the model through
    # pyfunc on every training run. That serving check is made here, once, instead.
    assert model.saved_input_example_info is None
    rows = train_frame[bank_spec.dataset.feature_columns].head(20)
    served = mlflow.pyfunc.load_model(source).predict(raw_like(rows, fitted))
    assert np.array_equal(np.asarray(served), fitted.predict(rows))


def test_find_version_by_fingerprint(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    assert registry.find_version_by_fingerprint("c" * 64) is None
    first = log(registry, fitted, train_frame, fingerprint="c" * 64)
    log(registry, fitted, train_frame, fingerprint="d" * 64)
    found = registry.find_version_by_fingerprint("c" * 64)
    assert found is not None
    assert (found.version, found.run_id) == (first.version, first.run_id)
    assert registry.find_version_by_fingerprint("e" * 64) is None


def test_aliases_move_between_versions(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, bank_spec: Spec
) -> None:
    assert registry.alias_version(CHALLENGER) is None  # nothing registered yet
    first = log(registry, fitted, train_frame, fingerprint="1" * 64)
    assert registry.alias_version(CHAMPION) is None
    set_champion(registry, first.version, bank_spec)
    second = log(registry, fitted, train_frame, fingerprint="2" * 64)
    assert registry.alias_version(CHALLENGER).version == second.version
    assert registry.alias_version(CHAMPION).version == first.version
    assert registry.version(first.version).aliases == [CHAMPION]  # challenger moved off it
    set_champion(registry, second.version, bank_spec)
    # Champion now: no longer a challenger (the alias is removed, not left on the champion).
    assert registry.version(second.version).aliases == [CHAMPION]
    assert registry.alias_version(CHALLENGER) is None
    assert registry.version(first.version).aliases == []


def test_champion_moves_only_through_set_champion_which_records_it(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, bank_spec: Spec
) -> None:
    """A finding: `registry.set_alias(CHAMPION, v)` moved the serving champion with no
    promotion line in the audit trail and the drift reference left on the old version.
    Now the registry refuses to move or remove `champion` except through `set_champion`."""
    from ct_platform.governance.audit import read_events
    from ct_platform.governance.lifecycle import promotion_event

    first = log(registry, fitted, train_frame, fingerprint="5" * 64)
    second = log(registry, fitted, train_frame, fingerprint="6" * 64)
    set_champion(registry, first.version, bank_spec)
    refusal = (
        "the 'champion' alias is not {} directly: move it with "
        "governance.lifecycle.set_champion(registry, version, spec, event), which records "
        "the promotion in the audit trail and moves the drift reference with it"
    )
    with pytest.raises(ChampionAliasError) as raised:
        registry.set_alias(CHAMPION, second.version)
    assert str(raised.value) == refusal.format("set")
    for remove in (lambda: registry.delete_alias(CHAMPION),
                   lambda: registry.drop_alias_of(CHAMPION, first.version)):  # fmt: skip
        with pytest.raises(ChampionAliasError) as raised:
            remove()
        assert str(raised.value) == refusal.format("removed")
    assert registry.alias_version(CHAMPION).version == first.version
    assert registry.alias_version(CHALLENGER).version == second.version
    assert read_events() == []

    event = promotion_event(
        registry,
        registry.alias_version(CHAMPION),
        registry.version(second.version),
        actor="ana",
    )
    set_champion(registry, second.version, bank_spec, event)
    assert registry.alias_version(CHAMPION).version == second.version
    [line] = read_events()
    assert (line.kind, line.from_version, line.to_version, line.actor) == (
        "promotion",
        first.version,
        second.version,
        "ana",
    )


def test_load_model_round_trip_predicts_identically(
    logged: tuple[ModelRegistry, ModelVersionInfo],
    fitted: Pipeline,
    train_frame: pd.DataFrame,
    bank_spec: Spec,
) -> None:
    registry, info = logged
    loaded = registry.load_model(info.version)
    features = train_frame[bank_spec.dataset.feature_columns]
    assert np.array_equal(loaded.predict_proba(features), fitted.predict_proba(features))


def test_model_size_is_the_stored_skops_file(
    logged: tuple[ModelRegistry, ModelVersionInfo], fitted: Pipeline
) -> None:
    """The model-size gate's figure: the bytes MLflow stored, read without serialising the
    model again; the same count a fresh skops serialisation of the fitted model gives."""
    registry, info = logged
    client = MlflowClient(registry.tracking_uri)
    source = client.get_model_version_download_uri(registry.model_name, str(info.version))
    stored = Path(url2pathname(urlparse(source).path)) / "model.skops"
    assert registry.model_size_bytes(info.version) == stored.stat().st_size
    assert registry.model_size_bytes(info.version) == len(skops_types.dumps(fitted))


def test_metrics_artifacts_and_tags_added_after_logging(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, tmp_path: Path
) -> None:
    info = log(registry, fitted, train_frame, fingerprint="7" * 64)
    registry.log_metrics(
        info.run_id,
        {"holdout_roc_auc": 0.61, "parity_max_abs_diff": 1.7e-7},
        tags={"ct.interval.holdout_roc_auc": "delong"},
    )
    report = tmp_path / "quality.html"
    report.write_text("<html>report</html>")
    registry.log_artifact(info.run_id, report, artifact_path="reports")
    registry.set_tags(info.version, {"ct.gates_passed": "true"})
    updated = registry.version(info.version)
    assert updated.metrics["holdout_roc_auc"] == 0.61
    assert updated.metrics["roc_auc"] == 0.79
    assert updated.tags["ct.gates_passed"] == "true"
    # Run tags and parameters, and the artifact page, from one read of the run.
    record = registry.run_record(info.run_id)
    assert record.tags["ct.interval.holdout_roc_auc"] == "delong"
    assert record.params == dict(
        MlflowClient(registry.tracking_uri).get_run(info.run_id).data.params
    )
    assert record.artifacts_url == registry.artifact_view_url(info.run_id)
    listed = MlflowClient(registry.tracking_uri).list_artifacts(info.run_id, "reports")
    assert [a.path for a in listed] == ["reports/quality.html"]


def journal_mode(database: Path) -> str:
    connection = sqlite3.connect(database)
    try:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()


def test_sqlite_store_commits_through_a_write_ahead_log(tmp_path: Path) -> None:
    """A store made before the switch (SQLite's rollback journal) is in WAL mode once a
    registry opens it, and keeps what it held; a new store gets it the same way."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    old = SqlAlchemyStore(uri, (tmp_path / "artifacts").as_uri())
    experiment_id = old.create_experiment("made-before")
    old.engine.dispose()
    assert journal_mode(database) == "delete"

    registry = ModelRegistry(uri, "wal_model", experiment="made-before")
    assert journal_mode(database) == "wal"
    assert registry.experiment_id == experiment_id
    registry._ensure_registered_model()
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_registered_model("wal_model").name == "wal_model"
