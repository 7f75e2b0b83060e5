"""deploy/helm/dagster-values.yaml against the official Dagster chart's own values.schema.json.

`helm` is not installable here (Debian ships no `helm`, PyPI no wheel with its binary) and the
chart is not vendored, so this runs only when the chart's folder is on disk:
CT_DAGSTER_CHART_DIR=<dagster repo>/helm/dagster (the tag of the pinned Dagster, 1.13.27).
Otherwise it skips, saying so. What it does is what `helm template` does first: merge the
chart's values.yaml (when the folder has one) with ours, then validate the result against
values.schema.json. Without values.yaml the schema's `required` lists are dropped (the chart's
defaults fill those), so a misspelled or mistyped key still fails. The schema's Kubernetes
objects (`$ref` to kubernetesjsonschema.dev, not reachable) resolve to the Kubernetes
definitions shipped in `kubernetes-validate`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from ct_platform_tests.conftest import REPO_ROOT

VALUES = REPO_ROOT / "deploy" / "helm" / "dagster-values.yaml"
KUBERNETES_DEFINITIONS = (
    Path(kubernetes_validate.__file__).parent
    / "kubernetes-json-schema"
    / "v1.33.0-local"
    / "_definitions.json"
)
EXTERNAL_DEFINITIONS = "https://kubernetesjsonschema.dev/"


def chart_dir() -> Path:
    folder = os.environ.get("CT_DAGSTER_CHART_DIR")
    if not folder or not (Path(folder) / "values.schema.json").is_file():
        print("\n!!! Helm values schema check SKIPPED: set CT_DAGSTER_CHART_DIR to the chart")
        pytest.skip(
            "the official Dagster chart is not on disk: set CT_DAGSTER_CHART_DIR to a folder "
            "holding its values.schema.json (helm/dagster of the dagster repository)"
        )
    return Path(folder)


def coalesce(defaults: Any, overrides: Any) -> Any:
    """Helm's merge of a chart's values with the user's: maps merge key by key, the user's
    value wins everywhere else, and a null deletes the chart's key."""
    if not (isinstance(defaults, dict) and isinstance(overrides, dict)):
        return overrides
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = coalesce(defaults.get(key), value)
    return merged


def without_required(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [without_required(item) for item in schema]
    return schema


def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    # The shipped file keeps its definitions under `$defs` (JSON Schema 2020-12); the chart
    # points into `#/definitions/...`: the same objects under both names, without its `$id`
    # (its inner references then resolve within it).
    shipped = json.loads(KUBERNETES_DEFINITIONS.read_text())
    shipped.pop("$id", None)
    kubernetes = referencing.Resource.from_contents({**shipped, "definitions": shipped["$defs"]})

    def retrieve(uri: str) -> referencing.Resource:
        if not uri.startswith(EXTERNAL_DEFINITIONS) or not uri.endswith("/_definitions.json"):
            raise referencing.exceptions.NoSuchResource(uri)
        return kubernetes

    registry = referencing.Registry(retrieve=retrieve)
    return jsonschema.Draft7Validator(schema, registry=registry)


def chart_values_and_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    chart = chart_dir()
    schema = json.loads((chart / "values.schema.json").read_text())
    ours = yaml.safe_load(VALUES.read_text())
    defaults_file = chart / "values.yaml"
    if defaults_file.is_file():
        return coalesce(yaml.safe_load(defaults_file.read_text()), ours), schema
    return ours, without_required(schema)


def leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors under an anyOf (a value or null): the one that says what is wrong."""
    if not error.context:
        return [error]
    return [leaf for child in error.context for leaf in leaves(child)]


def errors(values: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, leaf.absolute_path)) or '<top>'}: {leaf.message}"
        for error in validator(schema).iter_errors(values)
        for leaf in leaves(error)
    ]


def test_the_values_are_valid_for_the_official_chart():
    values, schema = chart_values_and_schema()

    assert errors(values, schema) == []


def test_a_misplaced_key_is_refused_by_the_charts_schema():
    """The check has teeth: a run launcher key the chart does not know, and a Kubernetes
    field of the wrong type inside a user deployment, each fail."""
    values, schema = chart_values_and_schema()
    misspelled = copy.deepcopy(values)
    misspelled["runLauncher"]["config"]["k8sRunLauncher"]["envVar"] = ["CT_HOME=/ct-home"]
    mistyped = copy.deepcopy(values)
    deployment = mistyped["dagster-user-deployments"]["deployments"][0]
    deployment["volumeMounts"][0]["mountPath"] = 42

    assert any("'envVar' was unexpected" in e for e in errors(misspelled, schema))
    assert any("42 is not of type 'string'" in e for e in errors(mistyped, schema))
