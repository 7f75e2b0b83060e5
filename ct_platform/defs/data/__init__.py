from ct_platform.defs.data.assets import build_data_defs

__all__ = ["build_data_defs"]
