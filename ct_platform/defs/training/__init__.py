from ct_platform.defs.training.assets import build_training_defs
from ct_platform.defs.training.checks import build_security_checks

__all__ = ["build_security_checks", "build_training_defs"]
