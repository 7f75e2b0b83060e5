"""Semantic versions of model versions: what changed for a client of the endpoint.

- major: the input schema changed (feature columns or their types) versus the previous
  version: a client's requests may no longer fit.
- minor: a retrain on new data (another data fingerprint), same schema.
- patch: same schema and data: a whole-window refit of a holdout fit, or a configuration
  change (e.g. estimator parameters) on the same data.

"Previous" is the newest registered version of the model, whatever its verdict: version
numbers and semantic versions then grow together. The first version is 1.0.0; so is the
first one after versions registered before semantic versions existed (they have no tag).
Two runs registering at the same instant on different data may both compute the same next
minor: the MLflow version number stays the unique key, the semantic version is a label.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from ct_platform.registry.versions import SEMVER_TAG
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo

# Digest of the input schema the version was trained with (feature columns and types).
SCHEMA_TAG = "ct.input_schema"
FIRST = "1.0.0"


def input_schema_digest(spec: Spec) -> str:
    """16 hex digits of SHA-256 over the feature columns and their types, in order."""
    columns = [[name, spec.dataset.columns[name].type] for name in spec.dataset.feature_columns]
    return hashlib.sha256(json.dumps(columns).encode()).hexdigest()[:16]


def next_semver(previous: ModelVersionInfo | None, *, schema: str, fingerprint: str) -> str:
    """The semantic version of a new version trained with `schema` on data `fingerprint`."""
    if previous is None or SEMVER_TAG not in previous.tags:
        return FIRST
    major, minor, patch = (int(part) for part in previous.tags[SEMVER_TAG].split("."))
    if previous.tags.get(SCHEMA_TAG) != schema:
        return f"{major + 1}.0.0"
    if previous.fingerprint != fingerprint:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def semver_tags(registry: ModelRegistry, spec: Spec, fingerprint: str) -> dict[str, str]:
    """Tags for the version about to be registered on `fingerprint`: semver and schema."""
    schema = input_schema_digest(spec)
    semver = next_semver(registry.newest_version(), schema=schema, fingerprint=fingerprint)
    return {SEMVER_TAG: semver, SCHEMA_TAG: schema}
