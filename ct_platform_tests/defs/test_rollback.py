"""`ct rollback`: the previous champion is restored and served again, in one recorded step;
the served bundle carries its own model card, at GET /v2/models/{name}/card."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster._core.storage.tags import AUTO_MATERIALIZE_TAG, AUTOMATION_CONDITION_TAG

from ct_platform.cli import main
from ct_platform.definitions import build_definitions
from ct_platform.deployment.rollout import served_version
from ct_platform.deployment.targets import target_for
from ct_platform.governance.audit import current_user, read_events
from ct_platform.serving.bundle import read_meta
from ct_platform.settings import Spec, load_spec
from ct_platform_tests.defs.conftest import spec_variant
from ct_platform_tests.defs.test_approval_flow import LENIENT_GATES, champion_version, train

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_spec(spec_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Spec]:
    changes = {"serving": {"port": free_port()}, "gates": LENIENT_GATES}
    path = spec_variant(spec_file, "served", changes)
    monkeypatch.setenv("CT_SPEC", str(path))
    spec = load_spec(path)
    yield spec
    target_for(spec).stop()


# The tags Dagster's asset daemon puts on a run an automation condition requested.
AUTOMATION_RUN_TAGS = {
    "dagster/sensor_name": "default_automation_condition_sensor",
    AUTO_MATERIALIZE_TAG: "true",
    AUTOMATION_CONDITION_TAG: "true",
}


# How the audit log names such a run: what the automation condition materialized, and the
# sensor that evaluated it.
AUTOMATION = "automation condition of deployed_endpoint (default_automation_condition_sensor)"


def deploy(spec: Spec, instance: dg.DagsterInstance) -> str:
    """Materialize `deployed_endpoint` as automation does after a new bundle; its URL."""
    job = build_definitions(spec).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("deployed_endpoint")],
        tags=AUTOMATION_RUN_TAGS,
    )
    return result.get_asset_materialization_events()[0].materialization.metadata["url"].value


def card(url: str, spec: Spec, **request: object) -> httpx.Response:
    return httpx.get(f"{url}/v2/models/{spec.model.name}/card", timeout=30, **request)


def test_served_card_then_rollback_restores_the_previous_champion(
    served_spec, instance, land_bank_batches, capsys
):
    land_bank_batches(2)
    train(served_spec, instance)
    url = deploy(served_spec, instance)
    markdown = card(url, served_spec)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    # Version 1 is the holdout fit the gates judged; its whole-window refit, version 2, serves.
    assert "# Model card: bank\\_marketing version 2" in markdown.text
    # The bundle's card has the parity figures measured when that bundle was built.
    meta = read_meta(served_spec.paths.bundles / "bank_marketing-v2")
    assert f"| rows | {meta.parity.rows} |" in markdown.text
    assert f"| max abs diff | {meta.parity.max_abs_diff:.4g} |" in markdown.text
    html = card(url, served_spec, headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert "<h2>ONNX parity</h2>" in html.text
    assert card(url, served_spec, params={"format": "html"}).text == html.text
    assert card(url, served_spec, params={"format": "pdf"}).status_code == 400

    land_bank_batches(1, first=2)
    train(served_spec, instance, tags={"dagster/user": "dana"})
    assert champion_version(served_spec) == 4
    deploy(served_spec, instance)
    assert served_version(url, served_spec.model.name) == "4"

    assert main(["rollback", "--reason", "v4 misroutes calls", "--by", "carol"]) == 0
    assert "champion: version 4 -> 2" in capsys.readouterr().out
    assert champion_version(served_spec) == 2
    assert served_version(url, served_spec.model.name) == "2"
    assert "version 2" in card(url, served_spec).text.splitlines()[0]

    events = read_events()
    kinds = [(e.kind, e.from_version, e.to_version, e.actor) for e in events]
    assert kinds == [
        # Who or what started each run, from its Dagster tags and launch: an in-process run
        # (as `dagster job execute` runs it), one naming its person, and the automation's.
        ("promotion", None, 2, f"{current_user()} via dagster job execute"),
        ("deployment", None, 2, AUTOMATION),
        ("promotion", 2, 4, "dana via dagster job execute"),
        ("deployment", 2, 4, AUTOMATION),
        ("rollback", 4, 2, "carol"),
        ("deployment", 4, 2, "carol"),
    ]
    assert events[4].reason == "v4 misroutes calls"
    assert all(e.dagster_run_id for e in events[:4])
    job = build_definitions(served_spec).resolve_implicit_global_asset_job_def()
    history = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("audit_history")]
    )
    table = history.get_asset_materialization_events()[0].materialization.metadata["history"]
    newest = table.value.records[0].data  # newest first
    assert (newest["event"], newest["versions"]) == ("deployment", "v4 -> v2")
    assert len(table.value.records) == len(events)

    # Nothing served before version 2: refused, and nothing changes.
    assert main(["rollback", "--reason", "again"]) == 1
    assert "no previous champion" in capsys.readouterr().err
    assert champion_version(served_spec) == 2
    assert len(read_events()) == len(events)
