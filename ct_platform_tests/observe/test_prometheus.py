"""Prometheus config and alert rules (promtool), the monitoring figures on a real scrape, and
the Grafana dashboard's expressions.

The scrape is the whole real chain: the model server (v2 bundle of `trained_platform`) scores
drifted traffic over HTTP and takes feedback, the real `production_drift` (Evidently) and
`production_performance` assets run, and a real Prometheus (Debian's binary, started from
deploy/prometheus/prometheus.yml with the target and intervals rewritten) scrapes the server.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
import yaml

from ct_platform.defs.monitoring.assets import PRODUCTION_DRIFT, PRODUCTION_PERFORMANCE
from ct_platform.settings import load_spec
from ct_platform_tests.conftest import BANK_SPEC, REPO_ROOT
from ct_platform_tests.defs.test_monitoring_loop import materialize
from ct_platform_tests.observe.conftest import TrainedPlatform
from ct_platform_tests.observe.services import answers, free_port, require_binary, service
from ct_platform_tests.serving.conftest import run_module_server, split_payload, wait_for_records

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "ct-platform.json"
# 2010 traffic: the economic columns sit far from the 2008 training window (real drift).
LIVE_ROWS = 5000
CHUNK_ROWS = 500
LABELLED_ROWS = 1000
METRIC_NAME = re.compile(r"\bct_[a-z0-9_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "prometheus")
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_promtool_checks_the_config_and_rules_and_the_rule_unit_tests_pass():
    promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    checked = promtool("check", "rules", str(PROMETHEUS_DIR / "rules.yml"))
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = promtool("test", "rules", str(PROMETHEUS_DIR / "rules.test.yml"))
    assert "SUCCESS" in tested.stdout
    # Among the cases promtool just ran: shadow copies (labelled slot="shadow" by the server,
    # test_slots_admin.py) never dilute served traffic: 90 5xx a minute over 6,000 served
    # requests fire CtServerErrorRate beside 6,000 shadow copies a minute.
    cases = yaml.safe_load((PROMETHEUS_DIR / "rules.test.yml").read_text())["tests"]
    diluted = next(case for case in cases if case["name"].startswith("shadow copies do not"))
    series = {item["series"]: item["values"] for item in diluted["input_series"]}
    assert series['ct_requests_total{endpoint="invocations", slot="shadow", model_version="4"}']
    fires = diluted["alert_rule_test"][0]
    assert fires["alertname"] == "CtServerErrorRate" and fires["exp_alerts"]


def test_latency_alert_holds_the_champion_to_the_shipped_spec_limit():
    """CtLatencyP99High's threshold and summary are the shipped spec's max_latency_ms."""
    (alert,) = [r for r in rules() if r.get("alert") == "CtLatencyP99High"]
    limit_ms = load_spec(BANK_SPEC).gates.resources.max_latency_ms
    threshold = float(alert["expr"].rsplit(">", 1)[1])
    assert threshold == pytest.approx(limit_ms / 1000)
    assert alert["annotations"]["summary"].endswith(f"(over {limit_ms:g} ms)")
    assert f"max_latency_ms: {limit_ms:g}" in (PROMETHEUS_DIR / "rules.yml").read_text()


@dataclass(frozen=True)
class Scraped:
    prometheus: str
    drift: dict  # production_drift's materialization metadata
    performance: dict  # production_performance's

    def query(self, expression: str) -> list[dict]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expression})
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def metric_names(self) -> set[str]:
        answer = httpx.get(f"{self.prometheus}/api/v1/label/__name__/values")
        return set(answer.json()["data"])


def send_live_traffic(url: str, rows: pd.DataFrame, spec) -> list[str]:
    """Score `rows` over HTTP in chunks, each with its own request id; returns the ids."""
    ids = []
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows.iloc[start : start + CHUNK_ROWS][spec.dataset.feature_columns]
        records = json.loads(chunk.to_json(orient="records"))
        request_id = f"live-{start}"
        answer = httpx.post(
            f"{url}/invocations",
            json=split_payload(records),
            headers={"x-request-id": request_id},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        ids.append(request_id)
    return ids


def prometheus_config(server: str, path: Path) -> Path:
    """The deployed config, pointed at `server`, scraping every 2 seconds."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {
        "scrape_interval": "2s",
        "scrape_timeout": "2s",
        "evaluation_interval": "2s",
    }
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules.yml")]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [server.removeprefix("http://")]}]
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def scraped(
    trained_platform: TrainedPlatform, bank_frame: pd.DataFrame, tmp_path_factory
) -> Iterator[Scraped]:
    prometheus = require_binary("prometheus", "prometheus")
    platform, work = trained_platform, tmp_path_factory.mktemp("scrape")
    bundle = platform.ct_home / "bundles" / f"{platform.spec.model.name}-v2"
    with pytest.MonkeyPatch.context() as monkeypatch:
        platform.use(monkeypatch)
        server, url = run_module_server(["--bundle", str(bundle)], platform.env, work / "srv.log")
        try:
            live = bank_frame.iloc[-LIVE_ROWS:]
            ids = send_live_traffic(url, live, platform.spec)
            # One refused request, so the error counter has a series to scrape.
            assert httpx.post(f"{url}/invocations", json={"nope": 1}).status_code == 400
            wait_for_records(platform.ct_home / "predictions", set(ids))
            labels = live[platform.spec.dataset.target].head(LABELLED_ROWS).tolist()
            feedback = [
                {"request_id": f"{ids[i // CHUNK_ROWS]}:{i % CHUNK_ROWS}", "label": int(y)}
                for i, y in enumerate(labels)
            ]
            assert httpx.post(f"{url}/feedback", json=feedback, timeout=60).status_code == 200
            with dg.DagsterInstance.from_config(str(platform.dagster_home)) as instance:
                drift = materialize(platform.spec, instance, PRODUCTION_DRIFT)
                performance = materialize(platform.spec, instance, PRODUCTION_PERFORMANCE)
            port = free_port()
            command = [prometheus, f"--config.file={prometheus_config(url, work / 'p.yml')}"]
            command += [f"--storage.tsdb.path={work / 'tsdb'}"]
            command += [f"--web.listen-address=127.0.0.1:{port}"]
            prom_url = f"http://127.0.0.1:{port}"
            with service(command, {}, answers(f"{prom_url}/-/ready"), work / "prometheus.log"):
                result = Scraped(prom_url, drift, performance)
                wait_for_scrape(result)
                yield result
        finally:
            server.terminate()
            server.wait(timeout=60)


def wait_for_scrape(scraped: Scraped) -> None:
    """Until Prometheus has scraped the figures (every 2 s; the box is slow)."""
    deadline = time.monotonic() + 300
    while not (scraped.query("ct_drift_share") and scraped.query("ct_performance_value")):
        assert time.monotonic() < deadline, "Prometheus never scraped the monitoring figures"
        time.sleep(1)


def single_value(scraped: Scraped, expression: str) -> tuple[dict, float]:
    (sample,) = scraped.query(expression)
    return sample["metric"], float(sample["value"][1])


# These include the shared training history (and the scrape chain) when first to need it.
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_real_drift_and_performance_figures_reach_prometheus(scraped: Scraped):
    drift, performance = scraped.drift, scraped.performance

    labels, share = single_value(scraped, "ct_drift_share")
    assert labels["model_version"] == "2" and labels["job"] == "ct-model-server"
    assert share == pytest.approx(drift["drift_share"]) and share > 0
    assert single_value(scraped, "ct_dataset_drift")[1] == float(drift["dataset_drift"])
    assert single_value(scraped, "ct_drift_window_rows")[1] == drift["rows"] == LIVE_ROWS
    _, score = single_value(scraped, 'ct_column_drift_score{column="euribor3m"}')
    assert score == pytest.approx(drift["column/euribor3m/score"])
    assert single_value(scraped, 'ct_column_drift{column="euribor3m"}')[1] == 1.0

    labels, value = single_value(scraped, "ct_performance_value")
    assert labels["metric"] == performance["metric"] == "roc_auc"
    assert value == pytest.approx(performance["value"])
    assert single_value(scraped, "ct_performance_reference")[1] == pytest.approx(
        performance["reference"]
    )
    assert single_value(scraped, "ct_performance_labelled_rows")[1] == LABELLED_ROWS
    # The alert's expression, evaluated by Prometheus on the scraped figures, agrees with the
    # platform's own verdict.
    (alert,) = [r for r in rules() if r.get("alert") == "CtDriftShareHigh"]
    assert bool(scraped.query(alert["expr"])) == drift["dataset_drift"]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_dashboard_expression_parses(tmp_path: Path):
    """promtool parses each panel's PromQL, as a recording rule of a throwaway rules file."""
    rules = [
        {"record": f"ct_dashboard:panel_{i}", "expr": expression}
        for i, expression in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_dashboard_and_rules_use_only_metrics_the_server_exports(scraped: Scraped):
    """A renamed or dropped metric breaks this test, not a panel in production."""
    exported = scraped.metric_names()
    used = {
        name
        for expression in dashboard_expressions() + [rule["expr"] for rule in rules()]
        for name in METRIC_NAME.findall(expression)
    }
    assert used - exported == set(), f"not exported: {sorted(used - exported)}"
    assert {"ct_drift_share", "ct_performance_decay", "ct_request_latency_seconds_bucket"} <= used


def test_grafana_provisioning_points_at_the_dashboard_and_datasource():
    grafana = REPO_ROOT / "deploy" / "grafana"
    datasource = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasource["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]} and source["type"] == "prometheus"
    provider = yaml.safe_load((grafana / "provisioning/dashboards/ct-platform.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
