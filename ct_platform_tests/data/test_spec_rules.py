"""Contract rules that come from newer spec keys: date columns and the target's range."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ct_platform.data.contract import check_contract
from ct_platform.data.ingest import ingest_batch
from ct_platform.data.reader import read_batch
from ct_platform.settings import Spec, load_spec
from ct_platform.training.window import build_window

DAY_FIRST = "%d/%m/%y"
FIRST_DAY = pd.Timestamp("2011-01-20")


def _edited(spec_file: Path, edit) -> Spec:
    raw = yaml.safe_load(spec_file.read_text())
    edit(raw["dataset"])
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(spec_file)


@pytest.fixture
def dated_spec(spec_file: Path) -> Spec:
    """The bank spec with a day-first `date` column as its time column."""

    def add_date(dataset: dict) -> None:
        dataset["columns"]["date"] = {"type": "date", "format": DAY_FIRST}
        dataset["time_column"] = "date"

    return _edited(spec_file, add_date)


def _dated_rows(bank_frame: pd.DataFrame, first_day: int, days: int) -> pd.DataFrame:
    """`days` bank rows, one per day from FIRST_DAY + first_day, shuffled, dates day-first."""
    rows = bank_frame.iloc[2000 + first_day : 2000 + first_day + days].copy()
    dates = FIRST_DAY + pd.to_timedelta(range(first_day, first_day + days), unit="D")
    rows.insert(0, "date", dates.strftime(DAY_FIRST))
    return rows.sample(frac=1, random_state=first_day)  # arrival order is not time order


def test_holdout_is_the_truly_newest_rows_across_batches(
    dated_spec: Spec, write_batch, bank_frame: pd.DataFrame
) -> None:
    paths = dated_spec.paths
    # Three batches of 100 days each, spanning month ends; landed newest first, then oldest.
    batches = {"a.csv": 0, "b.csv": 100, "c.csv": 200}
    for name in ["c.csv", "a.csv", "b.csv"]:
        write_batch(_dated_rows(bank_frame, batches[name], 100), name)
        assert ingest_batch(name, dated_spec, paths).passed

    ref = build_window(["c.csv", "a.csv", "b.csv"], dated_spec, paths)

    holdout, train = ref.load_holdout(), ref.load_train()
    newest_60 = FIRST_DAY + pd.to_timedelta(range(240, 300), unit="D")
    assert holdout["date"].tolist() == list(newest_60)  # 2011-09-17 .. 2011-11-15, in order
    assert holdout["date"].iloc[0] == pd.Timestamp("2011-09-17")
    assert train["date"].max() == pd.Timestamp("2011-09-16")
    assert train["date"].is_monotonic_increasing
    assert ref.batch_keys == ("a.csv", "b.csv", "c.csv")  # by time, not by landing order
    # A shorter window takes the newest batches by time: c.csv landed first but is newest.
    assert build_window(["c.csv", "a.csv", "b.csv"], dated_spec, paths, 2).batch_keys == (
        "b.csv",
        "c.csv",
    )


def test_date_column_is_bookkeeping_not_a_feature(dated_spec: Spec) -> None:
    assert "date" not in dated_spec.dataset.feature_columns
    assert "date" not in dated_spec.dataset.categorical_features


def test_iso_dates_under_a_day_first_spec_are_quarantined(
    dated_spec: Spec, write_batch, bank_frame: pd.DataFrame
) -> None:
    rows = _dated_rows(bank_frame, 0, 100).sort_index()  # day order
    rows["date"] = pd.to_datetime(rows["date"], format=DAY_FIRST).dt.strftime("%Y-%m-%d")
    write_batch(rows, "iso.csv")

    outcome = ingest_batch("iso.csv", dated_spec, dated_spec.paths)

    assert not outcome.passed
    rule = next(r for r in outcome.contract.failed if r.column == "date")
    assert rule.rule == "type"
    assert rule.figures["n_invalid"] == 100
    assert rule.figures["format"] == DAY_FIRST
    assert rule.message.startswith(
        "100 values (100.00%) are not a date in the format '%d/%m/%y': '2011-01-20', '2011-01-21'"
    )
    assert "column 'date', rule type: 100 values" in outcome.failure_summary
    record = json.loads((dated_spec.paths.quarantine / "iso.csv.json").read_text())
    assert "column 'date', rule type" in record["reason"]


def test_missing_time_fails_even_when_the_column_is_nullable(
    dated_spec: Spec, write_batch, bank_frame: pd.DataFrame
) -> None:
    rows = _dated_rows(bank_frame, 0, 100)
    rows.iloc[0, 0] = None  # a row without a time cannot be put in order
    result = check_contract(
        read_batch(write_batch(rows, "b.csv"), dated_spec.dataset), dated_spec.dataset
    )
    rule = next(r for r in result.failed if r.column == "date")
    assert (rule.rule, rule.figures["n_missing"]) == ("completeness", 1)
    assert "not nullable" in rule.message


@pytest.fixture
def count_spec(spec_file: Path) -> Spec:
    """A regression variant of the bank spec: predict `campaign` (a count), at least 0."""
    raw = yaml.safe_load(spec_file.read_text())
    dataset = raw["dataset"]
    del dataset["columns"]["campaign"], dataset["target_labels"]
    dataset["drop_columns"].append("y")
    dataset.update(target="campaign", task="regression", target_rules={"min": 0})
    raw["model"]["estimator"] = "sklearn.ensemble.HistGradientBoostingRegressor"
    raw["evaluation"]["primary_metric"] = "rmse"
    raw["gates"]["fairness"] = {"metric_gap": 1.0}  # RMSE gap between groups, in contacts
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(spec_file)


def test_negative_count_target_is_quarantined_naming_column_value_and_rule(
    count_spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    frame = bank_batch.copy()
    frame.loc[:2, "campaign"] = -3
    frame.loc[3, "campaign"] = -1
    write_batch(frame, "counts.csv")

    outcome = ingest_batch("counts.csv", count_spec, count_spec.paths)

    assert not outcome.passed
    [rule] = outcome.contract.failed
    assert (rule.rule, rule.column) == ("target_range", "campaign")
    assert rule.figures["n_out_of_range"] == 4
    assert rule.figures["min_seen"] == -3.0
    assert rule.describe().startswith(
        "column 'campaign', rule target_range: 4 values outside [0, unbounded] (e.g. -3, -1)"
    )
    assert (count_spec.paths.quarantine / "counts.csv").exists()


def test_count_target_in_range_passes(
    count_spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    write_batch(bank_batch, "counts.csv")
    outcome = ingest_batch("counts.csv", count_spec, count_spec.paths)
    assert outcome.passed, outcome.failure_summary
    assert outcome.valid.read()["campaign"].dtype == "float64"


def test_datetime_column_parses_with_its_format_only(
    spec_file: Path, write_batch, bank_batch: pd.DataFrame
) -> None:
    def add_datetime(dataset: dict) -> None:
        dataset["columns"]["at"] = {"type": "datetime", "format": "%Y-%m-%d %H:%M"}
        dataset["time_column"] = "at"

    spec = _edited(spec_file, add_datetime)
    stamps = pd.date_range("2011-01-31 23:00", periods=len(bank_batch), freq="7min")
    frame = bank_batch.assign(at=stamps.strftime("%Y-%m-%d %H:%M"))
    frame.loc[:1, "at"] = "2011-02-01"  # a date without its time
    result = check_contract(read_batch(write_batch(frame, "b.csv"), spec.dataset), spec.dataset)
    [rule] = result.failed
    assert (rule.rule, rule.column, rule.figures["n_invalid"]) == ("type", "at", 2)
    assert "not a datetime in the format '%Y-%m-%d %H:%M': '2011-02-01'" in rule.message

    passing = check_contract(
        read_batch(write_batch(frame.iloc[2:], "c.csv"), spec.dataset), spec.dataset
    )
    assert passing.passed
    assert passing.clean["at"].iloc[0] == stamps[2]


def test_replay_orders_day_first_dates_by_time_not_text(
    dated_spec: Spec, bank_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """`ct simulate` lands batches in time order: "31/01/11" comes before "01/02/11"."""
    from ct_platform.data.replay import load_source

    source = tmp_path / "source.csv"
    _dated_rows(bank_frame, 0, 60).to_csv(source, sep=dated_spec.dataset.separator, index=False)

    frame = load_source(source, dated_spec)

    replayed = pd.to_datetime(frame["date"], format=DAY_FIRST)
    assert replayed.is_monotonic_increasing
    assert frame["date"].iloc[0] == "20/01/11"
    assert frame["date"].iloc[-1] == "20/03/11"
