"""Automation conditions shared by the assets that follow training.

`eager()` waits while any upstream asset is in progress. Upstream of a deployment that is
the training chain, which on a busy landing folder is queued back to back: the new champion
would never be deployed. These conditions follow every update without that wait.
"""

import dagster as dg


def follows_every_update(*ignored_deps: str) -> dg.AutomationCondition:
    """Materialize after each update of a dependency (except `ignored_deps`), even while
    other runs of the upstream chain are queued or running."""
    condition = dg.AutomationCondition.eager().without(
        ~dg.AutomationCondition.any_deps_in_progress()
    )
    if ignored_deps:
        return condition.ignore(dg.AssetSelection.assets(*ignored_deps))
    return condition
