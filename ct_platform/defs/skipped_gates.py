"""Gates of a skipped step are said to be skipped, not warned about as missing.

A training run that finds nothing to train (its data fingerprint already has a verdict, or
another live run is training it) yields no `candidate_model`, so Dagster skips
`model_evaluation` and `refit_model`, whose gates are blocking asset checks. Dagster 1.13's
planner then logs, for each gate and each step downstream, the WARNING "Blocking asset check
'model_evaluation:metric_floor' emitted no result in step 'model_evaluation'; downstream
step 'refit_model' will proceed without gating on it." on a plain Python logger (printed on
the console), although that step is skipped as well. Dagster has no result a skipped step
could emit instead: the checks get their proper outcome on their own (SKIPPED, once the run
ends), and the run's event log already says "Skipping step ... due to skipped dependencies".

These steps' gate results are required outputs: a step that runs without yielding one fails
("did not return an output for non-optional output"). So for them the warning can only mean
"the step was skipped", and it is logged as that, at INFO.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# Dagster's execution planner (`dagster._core.execution.plan.active`) logs the warning.
PLANNER_LOGGER = "dagster._core.execution.plan.active"
_NO_RESULT = re.compile(
    r"Blocking asset check '(?P<check>[^']+)' emitted no result in step '(?P<step>[^']+)'; "
    r"downstream step '(?P<downstream>[^']+)' will proceed without gating on it\."
)


class SkippedGateNotice(logging.Filter):
    """Rewrites the planner's "emitted no result" warning for `steps` (steps whose check
    results are required outputs) as an INFO line saying the step was skipped."""

    def __init__(self, steps: Iterable[str]) -> None:
        super().__init__()
        self.steps = frozenset(steps)

    def filter(self, record: logging.LogRecord) -> bool:
        found = _NO_RESULT.fullmatch(record.getMessage())
        if found is not None and found["step"] in self.steps:
            record.msg = (
                f"gate {found['check']!r} not evaluated: step {found['step']!r} was skipped "
                f"(no new model in this run), so step {found['downstream']!r} is skipped too; "
                "Dagster records the check as skipped"
            )
            record.args = ()
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def say_skipped_gates(steps: Iterable[str]) -> None:
    """Install `SkippedGateNotice` for `steps` on Dagster's planner logger (once a process)."""
    logger = logging.getLogger(PLANNER_LOGGER)
    if not any(isinstance(existing, SkippedGateNotice) for existing in logger.filters):
        logger.addFilter(SkippedGateNotice(steps))
