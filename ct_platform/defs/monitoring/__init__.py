from ct_platform.defs.monitoring.assets import build_monitoring_defs
from ct_platform.defs.monitoring.sensors import build_retrain_sensor

__all__ = ["build_monitoring_defs", "build_retrain_sensor"]
