"""The monitoring figures file round trip: what the monitor writes is what /metrics exports,
and a check without a verdict exports no figure that could read as "no drift"."""

from __future__ import annotations

from ct_platform.monitoring.figures import write_drift_figures, write_performance_figures
from ct_platform.monitoring.performance import PerformanceResult
from ct_platform.monitoring.production import ProductionDrift
from ct_platform.monitoring.results import ColumnDrift, summarise
from ct_platform.serving.metrics import Metrics
from ct_platform.serving.platform_figures import platform_gauges
from ct_platform.settings import Paths


def test_too_little_traffic_exports_no_share_and_says_so(ct_home):
    paths = Paths.from_env()
    insufficient = summarise({}, 0.3, insufficient="insufficient data: 12 rows < minimum 200")
    write_drift_figures(paths, ProductionDrift(insufficient.insufficient, 4, 12, insufficient), 0.3)

    gauges = platform_gauges(paths.home)

    assert "ct_drift_share" not in gauges and "ct_dataset_drift" not in gauges
    assert gauges["ct_drift_verdict"][1] == [((("model_version", "4"),), 0.0)]
    assert gauges["ct_drift_window_rows"][1] == [((("model_version", "4"),), 12.0)]


def test_figures_render_as_prometheus_text(ct_home):
    paths = Paths.from_env()
    columns = {
        "age": ColumnDrift("ks", 0.01, 0.05, True),
        "job": ColumnDrift("chisquare", 0.4, 0.05, False),
    }
    result = summarise(columns, 0.3)
    write_drift_figures(paths, ProductionDrift("drift", 2, 900, result), 0.3)
    performance = PerformanceResult("roc_auc", None, 0.79, None, None, 3, "insufficient data", 0.05)
    write_performance_figures(paths, performance, 2)

    text = Metrics().render(platform_gauges(paths.home))

    assert 'ct_drift_share{model_version="2"} 0.5' in text
    assert 'ct_drift_share_threshold{model_version="2"} 0.3' in text
    assert 'ct_column_drift{column="age",method="ks"} 1.0' in text
    assert 'ct_column_drift_score{column="job",method="chisquare"} 0.4' in text
    assert 'ct_performance_verdict{model_version="2",metric="roc_auc"} 0.0' in text
    assert 'ct_performance_reference{model_version="2",metric="roc_auc"} 0.79' in text
    assert "ct_performance_value{" not in text


def test_no_file_exports_nothing(ct_home):
    assert platform_gauges(ct_home) == {}
