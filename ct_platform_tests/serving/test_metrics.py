"""The prediction counters of `/metrics`: per endpoint for requests, per slot for rows and
latency, each series in the order it first scored."""

from __future__ import annotations

from ct_platform.serving.metrics import Metrics


def test_predictions_count_per_endpoint_and_per_slot_across_endpoints() -> None:
    metrics = Metrics()
    metrics.prediction("invocations", "stable", "3", 1, 0.0004)
    metrics.prediction("v2_infer", "stable", "3", 1000, 0.02)
    metrics.prediction("invocations", "candidate", "4", 2, 2.0)
    metrics.prediction("invocations", "stable", "3", 1, 0.0015)
    lines = metrics.render({}).splitlines()
    assert [
        line for line in lines if line.startswith(("ct_requests_total", "ct_prediction_rows"))
    ] == [
        'ct_requests_total{endpoint="invocations",slot="stable",model_version="3"} 2',
        'ct_requests_total{endpoint="v2_infer",slot="stable",model_version="3"} 1',
        'ct_requests_total{endpoint="invocations",slot="candidate",model_version="4"} 1',
        'ct_prediction_rows_total{slot="stable",model_version="3"} 1002',
        'ct_prediction_rows_total{slot="candidate",model_version="4"} 2',
    ]
    stable = 'slot="stable",model_version="3"'
    assert f'ct_request_latency_seconds_bucket{{{stable},le="0.0005"}} 1' in lines
    assert f'ct_request_latency_seconds_bucket{{{stable},le="0.002"}} 2' in lines
    assert f'ct_request_latency_seconds_bucket{{{stable},le="0.025"}} 3' in lines
    assert f"ct_request_latency_seconds_count{{{stable}}} 3" in lines
    assert f"ct_request_latency_seconds_sum{{{stable}}} {0.0004 + 0.02 + 0.0015}" in lines
    candidate = 'slot="candidate",model_version="4"'
    assert f'ct_request_latency_seconds_bucket{{{candidate},le="1.0"}} 0' in lines
    assert f'ct_request_latency_seconds_bucket{{{candidate},le="+Inf"}} 1' in lines
