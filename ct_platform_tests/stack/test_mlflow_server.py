"""The platform against a real `mlflow server` over HTTP, as in production: registry writes
and reads, skops save/load and artifact downloads go through the server, which keeps the
artifacts in its own `--artifacts-destination` (the client never sees that folder)."""

from __future__ import annotations

import pytest

from ct_platform.deployment.export import pointed_bundle
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.serving.bundle import load_bundle, read_meta
from ct_platform.settings import load_spec
from ct_platform_tests.conftest import BANK_SPEC
from ct_platform_tests.defs.conftest import run_job
from ct_platform_tests.registry.conftest import log
from ct_platform_tests.stack.conftest import MlflowServer

pytestmark = pytest.mark.slow


def served_files(server: MlflowServer) -> set[str]:
    return {path.name for path in server.artifacts.rglob("*") if path.is_file()}


def test_registry_round_trip_through_the_server(mlflow_server, fitted, train_frame, tmp_path):
    registry = ModelRegistry(mlflow_server.url, "over_http", experiment="ct-server-tests")

    logged = log(registry, fitted, train_frame, fingerprint="fp-http-1")
    set_champion(registry, logged.version, load_spec(BANK_SPEC))

    assert registry.alias_version("champion").version == logged.version == 1
    assert registry.find_version_by_fingerprint("fp-http-1").version == 1
    # skops with the explicit allowlist, downloaded through the server's artifact proxy
    loaded = registry.load_model(1)
    rows = train_frame[list(fitted.feature_names_in_)].head(50)
    assert (loaded.predict_proba(rows) == fitted.predict_proba(rows)).all()
    assert {"model.skops", "MLmodel"} <= served_files(mlflow_server)
    # mlflow-artifacts:/ URIs: nothing was written to a folder of the client's own
    assert registry._client.get_run(logged.run_id).info.artifact_uri.startswith(
        "mlflow-artifacts:/"
    )
    note = tmp_path / "note.txt"
    note.write_text("uploaded through the server")
    registry.log_artifact(logged.run_id, note, "notes")
    fetched = registry.download_artifact(logged.run_id, "notes/note.txt", tmp_path / "back")
    assert fetched.read_text() == "uploaded through the server"
    assert "note.txt" in served_files(mlflow_server)


# The server's start (MLflow's import) and a whole training run: 20 min on the loaded box.
@pytest.mark.timeout(3600)
def test_training_job_registers_and_exports_through_the_server(
    mlflow_server, monkeypatch, spec, instance, land_bank_batches
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    land_bank_batches(2)

    result = run_job(spec, instance, "training_job")

    assert result.success
    registry = ModelRegistry(mlflow_server.url, spec.model.name, spec.dataset.name)
    champion = registry.alias_version("champion")
    # Version 1 is the holdout fit the gates judged, version 2 its whole-window refit.
    assert champion is not None and champion.version == 2
    assert "holdout.parquet" in served_files(mlflow_server)
    # The training run exported the champion's bundle from the model and holdout the server
    # served back, and checked the ONNX graph against the skops model on that holdout.
    bundle = pointed_bundle(spec)
    assert bundle is not None and read_meta(bundle).version == "2"
    assert load_bundle(bundle).backend_name == "onnx"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["onnx_parity"] is True
