"""The retrain sensor reads the monitoring assets' metadata; odd metadata is no verdict, never
an error that stops every tick."""

from ct_platform.defs.monitoring.sensors import _decay_signal
from ct_platform.settings import load_spec


def test_decay_without_figures_is_no_verdict_not_an_error() -> None:
    spec = load_spec()
    # What an older production_performance wrote when it had no labelled rows yet.
    active, detail = _decay_signal({"decayed": False, "value": "", "status": "no labels"}, spec)
    assert active is None
    assert detail == "no labels"


def test_decay_with_figures_names_them() -> None:
    spec = load_spec()
    metadata = {"decayed": True, "metric": "roc_auc", "value": 0.6, "reference": 0.7, "decay": 0.1}
    active, detail = _decay_signal(metadata, spec)
    assert active is True
    assert detail == "roc_auc 0.600 vs holdout 0.700 (shortfall +0.100, tolerance 0.05)"
