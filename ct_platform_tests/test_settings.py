"""The spec fails at load with an error naming the offending key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ct_platform.settings import Spec, SpecError, load_spec


@pytest.fixture
def edited_spec(spec_file: Path) -> Callable[[Callable[[dict], None]], Spec]:
    """Apply an edit to the bank spec's YAML, then load it."""

    def load_edited(edit: Callable[[dict], None]) -> Spec:
        raw = yaml.safe_load(spec_file.read_text())
        edit(raw)
        spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_spec(spec_file)

    return load_edited


def test_bank_spec_loads_with_paths_relative_to_the_spec(spec_file: Path) -> None:
    spec = load_spec()  # CT_SPEC points at spec_file
    assert spec.dataset.target == "y"
    assert spec.landing_dir == spec_file.parent / "incoming"
    assert "duration" not in spec.dataset.feature_columns
    assert spec.dataset.numeric_features[:2] == ["age", "campaign"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec file not found: .*nowhere\.yaml"):
        load_spec(tmp_path / "nowhere.yaml")


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("dataset: {name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        load_spec(path)


def test_unknown_key_is_named(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"dataset\.completness_min: Extra inputs"):
        edited_spec(lambda raw: raw["dataset"].update(completness_min=0.9))


def test_wrong_column_type_is_named(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"dataset\.columns\.age\.type: .*'int', 'float'"):
        edited_spec(lambda raw: raw["dataset"]["columns"]["age"].update(type="integer"))


def test_metric_must_fit_the_task(edited_spec) -> None:
    with pytest.raises(
        SpecError, match=r"evaluation\.primary_metric 'mae' does not fit task 'classification'"
    ):
        edited_spec(lambda raw: raw["evaluation"].update(primary_metric="mae"))


def test_estimator_must_be_scikit_learn(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"model: .*estimator 'os\.system' must be a scikit-learn"):
        edited_spec(lambda raw: raw["model"].update(estimator="os.system"))


def test_min_greater_than_max_is_named(edited_spec) -> None:
    with pytest.raises(
        SpecError, match=r"dataset\.columns\.age: .*min \(100\.0\) is greater than max \(17\.0\)"
    ):
        edited_spec(lambda raw: raw["dataset"]["columns"]["age"].update(min=100, max=17))


def test_target_listed_as_a_column_is_rejected(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"dataset: .*target 'y' must not also be listed"):
        edited_spec(lambda raw: raw["dataset"]["columns"].update(y={"type": "int"}))


def test_misspelled_landing_dir_names_the_key_and_the_resolved_path(
    edited_spec, spec_file: Path
) -> None:
    missing = spec_file.parent / "incomming"
    with pytest.raises(SpecError, match=rf"dataset\.landing_dir: folder {missing} does not exist"):
        edited_spec(lambda raw: raw["dataset"].update(landing_dir="incomming"))


def test_landing_dir_that_is_a_file_is_refused(edited_spec, spec_file: Path) -> None:
    (spec_file.parent / "incoming.csv").write_text("age;y\n")
    with pytest.raises(SpecError, match=r"dataset\.landing_dir: .*incoming\.csv exists but"):
        edited_spec(lambda raw: raw["dataset"].update(landing_dir="incoming.csv"))


def test_default_landing_dir_is_created(edited_spec, spec_file: Path) -> None:
    spec = edited_spec(lambda raw: raw["dataset"].pop("landing_dir"))
    assert spec.landing_dir == spec_file.parent / "data" / "incoming"
    assert spec.landing_dir.is_dir()


def test_key_written_twice_is_refused(spec_file: Path) -> None:
    spec_file.write_text(spec_file.read_text() + "model:\n  name: again\n")
    with pytest.raises(SpecError, match="key 'model' is written twice"):
        load_spec(spec_file)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["drop_columns"].append("duration"),
            r"dataset: .*drop_columns lists a name twice",
        ),
        (lambda d: d["drop_columns"].append("y"), r"dataset: .*drop_columns lists the target 'y'"),
        (lambda d: d.update(time_column="agee"), r"time_column 'agee' is not one of the declared"),
        (lambda d: d.update(separator=";;"), r"dataset\.separator: .*at most 1 character"),
    ],
)
def test_names_referencing_columns_are_checked_at_load(edited_spec, edit, message) -> None:
    with pytest.raises(SpecError, match=message):
        edited_spec(lambda raw: edit(raw["dataset"]))


def test_date_column_needs_a_format(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"dataset\.columns\.day: .*needs a strftime `format`"):
        edited_spec(lambda raw: raw["dataset"]["columns"].update(day={"type": "date"}))


def test_date_column_that_is_not_the_time_column_is_refused(edited_spec) -> None:
    with pytest.raises(
        SpecError, match=r"dataset: .*column 'day' is type 'date' but is not the time_column"
    ):
        edited_spec(
            lambda raw: raw["dataset"]["columns"].update(day={"type": "date", "format": "%d/%m/%y"})
        )


def test_time_column_sorting_as_text_is_refused(edited_spec) -> None:
    with pytest.raises(
        SpecError, match=r"time_column 'job' is type 'category', which sorts as text"
    ):
        edited_spec(lambda raw: raw["dataset"].update(time_column="job"))


def test_target_rules_fit_the_task(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"target_rules \(min/max\) apply to regression"):
        edited_spec(lambda raw: raw["dataset"].update(target_rules={"min": 0}))
    with pytest.raises(SpecError, match=r"dataset\.target_rules: .*min \(5\.0\) is greater"):
        edited_spec(lambda raw: raw["dataset"].update(target_rules={"min": 5, "max": 1}))


def test_definitions_validate_fails_on_a_misspelled_landing_dir(
    spec_file: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load(spec_file.read_text())
    raw["dataset"]["landing_dir"] = "incomming"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "CT_SPEC": str(spec_file), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "definitions", "validate", "-m", "ct_platform.definitions"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "dataset.landing_dir: folder" in result.stdout + result.stderr


def test_serving_port_from_environment_overrides_the_spec(
    edited_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_SERVING_PORT", "18099")
    assert (
        edited_spec(lambda raw: raw.setdefault("serving", {}).update(port=8080)).serving.port
        == 18099
    )
    # Also when the spec has no serving section at all (the default is built at load).
    assert edited_spec(lambda raw: raw.pop("serving", None)).serving.port == 18099
    monkeypatch.delenv("CT_SERVING_PORT")
    assert (
        edited_spec(lambda raw: raw.setdefault("serving", {}).update(port=8081)).serving.port
        == 8081
    )


@pytest.mark.parametrize("value", ["eighty", "0", "70000"])
def test_bad_serving_port_in_environment_is_named(
    edited_spec, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CT_SERVING_PORT", value)
    with pytest.raises(SpecError, match=rf"serving: .*CT_SERVING_PORT='{value}' is not a port"):
        edited_spec(lambda raw: None)


def set_gates(**gates: dict) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        raw["gates"].pop("resources", None)
        raw["gates"].pop("latency", None)
        raw["gates"].update(gates)

    return edit


def test_an_older_latency_gate_loads_as_the_resource_gate(edited_spec) -> None:
    spec = edited_spec(set_gates(latency={"max_ms": 25, "blocking": False}))
    resources = spec.gates.resources
    assert (resources.max_latency_ms, resources.blocking) == (25, False)
    assert (resources.max_memory_mb, resources.max_batch_latency_ms) == (2048, None)


def test_latency_and_resources_together_are_refused(edited_spec) -> None:
    both = set_gates(latency={"max_ms": 25}, resources={"max_latency_ms": 50})
    with pytest.raises(SpecError, match=r"gates\.latency is folded into gates\.resources"):
        edited_spec(both)


def test_an_older_champion_regression_gate_is_non_inferiority_within_its_tolerance(
    edited_spec,
) -> None:
    spec = edited_spec(set_gates(champion_regression={"tolerance": 0.02}))
    gate = spec.gates.champion_regression
    assert (gate.tolerance, gate.policy, gate.alpha, gate.blocking) == (
        0.02,
        "non_inferiority",
        0.05,
        True,
    )
    assert spec.gates.resources.max_latency_ms == 100  # the default limit


def test_an_unknown_promotion_policy_is_named(edited_spec) -> None:
    with pytest.raises(SpecError, match=r"gates\.champion_regression\.policy"):
        edited_spec(set_gates(champion_regression={"policy": "best_effort"}))
