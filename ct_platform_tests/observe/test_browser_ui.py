"""The Dagster and MLflow UIs in a real headless Chromium, after a real training run in which a
blocking gate failed.

Two in-process training runs on one on-disk Dagster instance and the default MLflow store:
the first promotes version 1 (`champion`), the second (a metric floor no model reaches)
rejects version 2. Then the real `dagster-webserver` (the platform's code location) and the
real `mlflow server` serve those stores, and Playwright drives the system Chromium (no
browser download). Every wait is on page content, never a fixed sleep. Screenshots go to a
pytest temp folder (path printed), and also to `CT_UI_SCREENSHOTS` when that is set.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ct_platform.definitions import build_definitions
from ct_platform.registry.mlflow_registry import default_tracking_uri, sqlite_artifact_root
from ct_platform.settings import Spec, load_spec
from ct_platform_tests.defs.conftest import BATCH_ROWS, STRICT_FLOOR, run_job, spec_variant
from ct_platform_tests.observe.services import BIN, answers, free_port, require_binary, service

pytestmark = pytest.mark.slow
# The box is shared and loaded: page loads and GraphQL answers can take long.
PAGE_TIMEOUT_MS = 180_000
FAILED_GATE = "metric_floor"
GATED_ASSET = dg.AssetKey("model_evaluation")


@dataclass(frozen=True)
class TrainedStores:
    spec: Spec
    dagster_home: Path
    rejected_run_id: str
    # The failed gate's own description, as the run recorded it.
    failed_gate_reason: str


@pytest.fixture
def trained_stores(
    spec_file: Path, spec: Spec, bank_frame: pd.DataFrame, tmp_path: Path, monkeypatch
) -> TrainedStores:
    dagster_home = tmp_path / "ui_dagster_home"
    dagster_home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))

    def land(index: int) -> None:
        rows = bank_frame.iloc[index * BATCH_ROWS : (index + 1) * BATCH_ROWS]
        rows.to_csv(spec.landing_dir / f"batch-{index + 1:05d}.csv", sep=";", index=False)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        land(0), land(1)
        assert run_job(spec, instance, "training_job").success
        land(2)
        strict = load_spec(spec_variant(spec_file, "strict", STRICT_FLOOR))
        rejected = run_job(strict, instance, "training_job")
    assert not rejected.success
    (gate,) = [e for e in rejected.get_asset_check_evaluations() if e.check_name == FAILED_GATE]
    assert not gate.passed and gate.description
    return TrainedStores(spec, dagster_home, rejected.run_id, gate.description)


@pytest.fixture
def dagster_ui(trained_stores: TrainedStores, spec_file: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [str(BIN / "dagster-webserver"), "-m", "ct_platform.definitions"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    env = {"DAGSTER_HOME": str(trained_stores.dagster_home), "CT_SPEC": str(spec_file)}
    url = f"http://127.0.0.1:{port}"
    with service(command, env, answers(f"{url}/server_info"), tmp_path / "webserver.log"):
        yield url


@pytest.fixture
def mlflow_ui(trained_stores: TrainedStores, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    store = default_tracking_uri()
    artifacts = sqlite_artifact_root(store)
    assert artifacts is not None
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", store]
    command += ["--default-artifact-root", artifacts.as_uri(), "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with service(command, {}, answers(f"{url}/health"), tmp_path / "mlflow.log"):
        yield url


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator:
    chromium = require_binary("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        yield page
        browser.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screenshots" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    if keep := os.environ.get("CT_UI_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def dismiss_community_dialog(page) -> None:
    """Dagster's first-visit newsletter dialog covers the page; it has a Skip button."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.click()


def training_assets(spec: Spec) -> tuple[list[str], list[str]]:
    """(asset names of the `training` group, check names on `model_evaluation`), from the
    platform's own definitions, so an added asset or gate is expected in the UI too."""
    defs = build_definitions(spec)
    names = [
        s.key.to_user_string() for s in defs.resolve_all_asset_specs() if s.group_name == "training"
    ]
    checks = [
        k.name for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key == GATED_ASSET
    ]
    return names, checks


# One test for both UIs: the training runs behind them are the slow part (about a minute).
def test_uis_show_assets_checks_the_failed_gate_reason_and_the_champion(
    trained_stores: TrainedStores, dagster_ui: str, mlflow_ui: str, browser_page, tmp_path: Path
):
    page = browser_page
    check_dagster_ui(page, dagster_ui, trained_stores, tmp_path)
    check_mlflow_ui(page, mlflow_ui, trained_stores, tmp_path)


def check_dagster_ui(page, dagster_ui: str, trained_stores: TrainedStores, tmp_path: Path) -> None:
    assets, checks = training_assets(trained_stores.spec)
    assert len(assets) >= 5 and FAILED_GATE in checks

    page.goto(f"{dagster_ui}/locations/ct_platform.definitions/asset-groups/training")
    dismiss_community_dialog(page)
    for name in assets:
        page.get_by_text(name, exact=True).first.wait_for()
    # The evaluation node counts its checks: one of them (the gate) failed.
    passed = len(checks) - 1
    page.get_by_text(f"{passed} / {len(checks)} Passed").first.wait_for()
    screenshot(page, tmp_path, "dagster-asset-graph")

    page.goto(f"{dagster_ui}/assets/{GATED_ASSET.to_user_string()}?view=checks")
    dismiss_community_dialog(page)
    page.get_by_text(f"Checks ({len(checks)})").wait_for()
    for name in checks:
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text(FAILED_GATE, exact=True).first.click()
    page.get_by_text("Failed", exact=True).first.wait_for()
    # The gate's reason, with its figures, exactly as the run recorded it.
    page.get_by_text(trained_stores.failed_gate_reason).first.wait_for()
    assert re.search(r"0\.999", trained_stores.failed_gate_reason)
    screenshot(page, tmp_path, "dagster-failed-gate")

    page.goto(f"{dagster_ui}/runs/{trained_stores.rejected_run_id}")
    dismiss_community_dialog(page)
    page.get_by_text("Failure", exact=True).first.wait_for()
    screenshot(page, tmp_path, "dagster-rejected-run")


def check_mlflow_ui(page, mlflow_ui: str, trained_stores: TrainedStores, tmp_path: Path) -> None:
    model = trained_stores.spec.model.name
    page.goto(f"{mlflow_ui}/#/models/{model}")
    page.get_by_text(model).first.wait_for()
    alias = page.get_by_text(re.compile(r"champion")).first
    alias.wait_for()
    screenshot(page, tmp_path, "mlflow-registered-model")
