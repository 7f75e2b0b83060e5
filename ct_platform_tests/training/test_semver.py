"""Semantic versions: major for a new input schema, minor for new data, patch otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

from ct_platform.registry.versions import SEMVER_TAG, ModelVersionInfo
from ct_platform.settings import Spec
from ct_platform.training.semver import SCHEMA_TAG, input_schema_digest, next_semver


def registered(semver: str | None, schema: str, fingerprint: str) -> ModelVersionInfo:
    tags = {SCHEMA_TAG: schema} | ({SEMVER_TAG: semver} if semver else {})
    return ModelVersionInfo("m", 7, "run", fingerprint, {}, datetime.now(UTC), [], tags)


def with_columns(spec: Spec, **columns: dict) -> Spec:
    raw = spec.model_dump()
    for name, change in columns.items():
        raw["dataset"]["columns"][name] |= change
    return Spec.model_validate(raw)


def test_the_first_version_is_1_0_0() -> None:
    assert next_semver(None, schema="s", fingerprint="a") == "1.0.0"
    # Versions registered before semantic versions existed carry no tag: start afresh.
    assert next_semver(registered(None, "s", "a"), schema="s", fingerprint="b") == "1.0.0"


def test_each_kind_of_change_bumps_its_part() -> None:
    previous = registered("1.2.3", "s", "a")
    assert next_semver(previous, schema="other", fingerprint="a") == "2.0.0"  # input schema
    assert next_semver(previous, schema="other", fingerprint="b") == "2.0.0"
    assert next_semver(previous, schema="s", fingerprint="b") == "1.3.0"  # new data
    # Same data: a whole-window refit, or a configuration change such as estimator params.
    assert next_semver(previous, schema="s", fingerprint="a") == "1.2.4"


def test_the_input_schema_is_the_feature_columns_and_their_types(bank_spec: Spec) -> None:
    digest = input_schema_digest(bank_spec)
    assert digest == input_schema_digest(bank_spec) and len(digest) == 16
    # A type change is a new schema; a new bound on a column is not (same request shape).
    assert input_schema_digest(with_columns(bank_spec, age={"type": "float"})) != digest
    assert input_schema_digest(with_columns(bank_spec, age={"max": 99})) == digest
    fewer = bank_spec.model_dump()
    fewer["dataset"]["drop_columns"] = [*fewer["dataset"]["drop_columns"], "age"]
    del fewer["dataset"]["columns"]["age"]
    assert input_schema_digest(Spec.model_validate(fewer)) != digest
