from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ct_platform.data.contract import ContractResult, RuleResult, check_contract
from ct_platform.data.reader import read_batch
from ct_platform.settings import Spec


def _check_file(frame: pd.DataFrame, spec: Spec, write_batch) -> ContractResult:
    """Contract on a frame after a real round trip through a CSV batch file."""
    return check_contract(read_batch(write_batch(frame, "batch.csv"), spec.dataset), spec.dataset)


def _failed(result: ContractResult, rule: str, column: str | None = None) -> RuleResult:
    matches = [r for r in result.failed if r.rule == rule and r.column == column]
    assert matches, f"expected {rule}[{column}] to fail; failed: {result.failed}"
    return matches[0]


@pytest.mark.parametrize("start", [0, 20_000, 37_000])
def test_real_bank_batches_pass(
    spec: Spec, write_batch, bank_frame: pd.DataFrame, start: int
) -> None:
    result = _check_file(bank_frame.iloc[start : start + 4000], spec, write_batch)
    assert result.passed, result.failed
    assert result.n_rows == 4000
    json.dumps(result.to_dict())  # figures are JSON-able as they are
    rules = {(r.rule, r.column) for r in result.rules}
    assert {("columns", None), ("range", "age"), ("categories", "job"), ("target", "y")} <= rules


def test_clean_frame_is_typed_as_the_pipeline_expects(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    clean = _check_file(bank_batch, spec, write_batch).clean
    dataset = spec.dataset
    assert list(clean.columns) == [*dataset.feature_columns, dataset.target]
    assert "duration" not in clean.columns
    for name in dataset.numeric_features:
        assert clean[name].dtype == np.float64
    for name in dataset.categorical_features:
        assert clean[name].dtype == object
        assert clean[name].map(type).eq(str).all()
    assert clean["y"].dtype == np.int64
    never_contacted = bank_batch["pdays"] == 999
    assert clean["pdays"][never_contacted].isna().all()
    assert clean["pdays"][~never_contacted].notna().all()


def test_sentinel_counts_as_present_for_completeness(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    assert (bank_batch["pdays"] == 999).mean() > 0.9  # nearly all sentinels, yet complete
    result = _check_file(bank_batch, spec, write_batch)
    pdays = next(r for r in result.rules if r.rule == "completeness" and r.column == "pdays")
    assert pdays.passed and pdays.figures["non_missing_share"] == 1.0


def test_missing_and_unexpected_columns(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = bank_batch.drop(columns=["euribor3m"]).assign(customer_id=range(len(bank_batch)))
    result = _check_file(frame, spec, write_batch)
    rule = _failed(result, "columns")
    assert rule.figures["missing"] == "euribor3m"
    assert rule.figures["unexpected"] == "customer_id"
    assert result.clean is None


def test_dropped_column_absent_from_the_header_names_the_spec_key(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    result = _check_file(bank_batch.drop(columns=["duration"]), spec, write_batch)
    rule = _failed(result, "columns")
    assert rule.message == "dataset.drop_columns names 'duration', absent from the file header"
    assert rule.figures["missing"] == "duration"


def test_misspelled_drop_column_is_named_with_a_hint(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    misspelled = spec.dataset.model_copy(update={"drop_columns": ["duraton"]})
    result = check_contract(read_batch(write_batch(bank_batch, "b.csv"), misspelled), misspelled)
    assert _failed(result, "columns").message == (
        "dataset.drop_columns names 'duraton' (did you mean 'duration'?), absent from the file "
        "header; unexpected columns not in the spec: ['duration']"
    )


def test_wrong_types_are_counted(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = bank_batch.astype({"age": object, "campaign": float})
    frame.loc[:9, "age"] = "forty"
    frame.loc[:4, "campaign"] = 1.5  # an int column must hold whole numbers
    result = _check_file(frame, spec, write_batch)
    age = _failed(result, "type", "age")
    assert age.figures["n_invalid"] == 10
    assert age.figures["invalid_share"] == pytest.approx(10 / len(frame))
    assert "'forty'" in age.figures["examples"]
    assert _failed(result, "type", "campaign").figures["n_invalid"] == 5


def test_huge_and_infinite_values(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = bank_batch.astype({"euribor3m": object, "age": float})
    frame.loc[0, "euribor3m"] = "inf"
    frame.loc[1, "age"] = 1e300
    result = _check_file(frame, spec, write_batch)
    assert _failed(result, "finite", "euribor3m").figures["n_infinite"] == 1
    assert _failed(result, "finite", "age").figures["n_absurd"] == 1
    age_range = _failed(result, "range", "age")
    assert age_range.figures["n_out_of_range"] == 1
    assert age_range.figures["max_seen"] == 1e300


def test_failed_rules_name_their_column_in_one_line(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    frame = bank_batch.astype({"emp.var.rate": object})
    frame["emp.var.rate"] = "-0,1"  # a decimal comma: what CI printed without the column
    rule = _failed(_check_file(frame, spec, write_batch), "type", "emp.var.rate")
    assert rule.describe() == (
        "column 'emp.var.rate', rule type: 500 values (100.00%) are not a number: '-0,1'"
    )


def test_out_of_range_ignores_sentinels(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = bank_batch.copy()
    frame.loc[:2, "cons.conf.idx"] = 12.5  # the index is never positive
    result = _check_file(frame, spec, write_batch)
    rule = _failed(result, "range", "cons.conf.idx")
    assert rule.figures["n_out_of_range"] == 3
    assert rule.message.startswith("3 values outside [-80, 0] (e.g. 12.5); seen [")
    assert rule.figures["max_seen"] == 12.5
    assert all(r.column != "pdays" for r in result.failed)  # 999 is a sentinel, not > max


def test_unknown_categories_with_counts(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = bank_batch.copy()
    frame.loc[:3, "job"] = "astronaut"
    frame.loc[4, "job"] = "pirate"
    rule = _failed(_check_file(frame, spec, write_batch), "categories", "job")
    assert rule.figures["n_unknown"] == 5
    assert rule.figures["unknown"] == "'astronaut' (4), 'pirate' (1)"


def test_completeness_below_minimum(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = bank_batch.copy()
    frame.loc[:49, "education"] = None  # 10 % missing; the spec allows 5 %
    rule = _failed(_check_file(frame, spec, write_batch), "completeness", "education")
    assert rule.figures["n_missing"] == 50
    assert rule.figures["non_missing_share"] == pytest.approx(0.9)


def test_a_few_missing_targets_are_dropped_from_the_clean_frame(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    frame = bank_batch.astype({"y": object})
    frame.loc[:4, "y"] = None  # 1 % missing: within completeness
    result = _check_file(frame, spec, write_batch)
    assert result.passed
    assert len(result.clean) == len(frame) - 5


def test_target_all_missing(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    result = _check_file(bank_batch.assign(y=None), spec, write_batch)
    assert "missing in every row" in _failed(result, "target", "y").message
    assert _failed(result, "completeness", "y").figures["n_missing"] == len(bank_batch)


def test_target_labels_outside_the_declared_set(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    frame = bank_batch.astype({"y": object})
    frame.loc[:2, "y"] = "yes"
    frame.loc[3, "y"] = 2
    rule = _failed(_check_file(frame, spec, write_batch), "target", "y")
    assert rule.figures["n_invalid"] == 4
    assert rule.figures["invalid"] == "'yes', '2'"


def test_duplicate_rate(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    frame = pd.concat([bank_batch, bank_batch.iloc[:100]], ignore_index=True)
    rule = _failed(_check_file(frame, spec, write_batch), "duplicates")
    assert rule.figures["n_duplicates"] >= 100
    assert rule.figures["rate"] > spec.dataset.duplicate_rate_max


def test_too_few_rows(spec: Spec, write_batch, bank_batch: pd.DataFrame) -> None:
    rule = _failed(_check_file(bank_batch.iloc[:10], spec, write_batch), "min_rows")
    assert rule.figures == {"n_rows": 10, "min_rows": spec.dataset.min_rows}


def test_typed_parquet_batches_are_checked_too(spec: Spec, bank_batch: pd.DataFrame) -> None:
    path = spec.landing_dir / "batch.parquet"
    bank_batch.to_parquet(path, index=False)
    result = check_contract(read_batch(path, spec.dataset), spec.dataset)
    assert result.passed, result.failed
    assert result.clean["job"].map(type).eq(str).all()


def test_duplicated_column_names_fail_the_columns_rule(
    spec: Spec, bank_batch: pd.DataFrame
) -> None:
    frame = pd.concat([bank_batch, bank_batch[["age"]]], axis=1)  # as a Parquet file could hold
    result = check_contract(frame, spec.dataset)
    assert _failed(result, "columns").figures["duplicated"] == "age"
    assert all(rule.column != "age" for rule in result.rules)
