"""The provisioned Grafana dashboard's structure, checked without Grafana.

Grafana has no Debian package and no image registry is reachable, so no Grafana runs here
(deploy/README.md). Its expressions are parsed by promtool and their metrics checked against
a real /metrics scrape in observe/test_prometheus.py; this checks what Grafana itself would
refuse or garble when provisioning the file: panel ids and query refIds unique, every panel
inside the 24-column grid and none overlapping another, panel types Grafana ships, and every
query on the provisioned datasource.
"""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import yaml

from ct_platform_tests.conftest import REPO_ROOT

GRAFANA = REPO_ROOT / "deploy" / "grafana"
GRID_COLUMNS = 24
# Panel types built into Grafana 11 (no plugin needed).
BUILT_IN_PANELS = {
    "barchart", "bargauge", "gauge", "heatmap", "histogram", "logs", "piechart", "stat",
    "state-timeline", "status-history", "table", "text", "timeseries",
}  # fmt: skip


def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "ct-platform.json").read_text())


def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    grid = panel["gridPos"]
    return {
        (x, y)
        for x in range(grid["x"], grid["x"] + grid["w"])
        for y in range(grid["y"], grid["y"] + grid["h"])
    }


def test_panels_fit_the_grid_without_overlapping():
    panels = dashboard()["panels"]

    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
    for first, second in combinations(panels, 2):
        assert not cells(first) & cells(second), (first["title"], second["title"])


def test_every_query_is_on_the_provisioned_prometheus_datasource():
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    uids = {source["uid"]: source["type"] for source in provisioned}

    for panel in dashboard()["panels"]:
        assert panel["type"] in BUILT_IN_PANELS, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids), panel["title"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert uids.get(source["uid"]) == source["type"] == "prometheus", panel["title"]
