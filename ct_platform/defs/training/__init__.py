from ct_platform.defs.training.assets import build_training_defs

__all__ = ["build_training_defs"]
