from ct_platform.defs.serving.assets import build_serving_defs

__all__ = ["build_serving_defs"]
