from ct_platform.defs.serving.assets import build_serving_defs
from ct_platform.defs.serving.rollout import build_rollout_defs
from ct_platform.defs.serving.sensors import build_endpoint_watchdog

__all__ = ["build_endpoint_watchdog", "build_rollout_defs", "build_serving_defs"]
