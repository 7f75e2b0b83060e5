"""SpecPreparation: raw rows in, the contract's cleaned features out; cleaned rows unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.contract import check_contract
from ct_platform.settings import Spec
from ct_platform.training.fit import fit_pipeline
from ct_platform.training.preparation import (
    PREPARATION_STEP,
    SpecPreparation,
    raw_like,
    without_preparation,
)


@pytest.fixture(scope="module")
def raw(bank_frame: pd.DataFrame) -> pd.DataFrame:
    """Raw rows where pdays is both the sentinel 999 and real day counts."""
    rows = bank_frame.iloc[-1500:].reset_index(drop=True)
    assert {999} < set(rows["pdays"])
    return rows


@pytest.fixture(scope="module")
def clean(raw: pd.DataFrame, bank_spec: Spec) -> pd.DataFrame:
    return check_contract(raw, bank_spec.dataset).clean


def test_raw_rows_come_out_as_the_contract_cleans_them(
    raw: pd.DataFrame, clean: pd.DataFrame, bank_spec: Spec
) -> None:
    prepared = SpecPreparation.from_spec(bank_spec.dataset).fit(raw).transform(raw)
    # `duration` (dropped: a leak) and the target are gone; pdays=999 is missing.
    assert list(prepared.columns) == bank_spec.dataset.feature_columns
    assert prepared["pdays"].isna().sum() == (raw["pdays"] == 999).sum()
    pd.testing.assert_frame_equal(prepared, clean[bank_spec.dataset.feature_columns])


def test_cleaned_rows_are_unchanged(clean: pd.DataFrame, bank_spec: Spec) -> None:
    features = clean[bank_spec.dataset.feature_columns]
    prepared = SpecPreparation.from_spec(bank_spec.dataset).fit(features).transform(features)
    pd.testing.assert_frame_equal(prepared, features)


def test_the_fitted_pipeline_starts_with_it_and_serving_drops_it(
    clean: pd.DataFrame, bank_spec: Spec
) -> None:
    model = fit_pipeline(clean, bank_spec)
    assert model.steps[0][0] == PREPARATION_STEP
    assert list(model.feature_names_in_) == bank_spec.dataset.feature_columns
    served = without_preparation(model)
    assert [name for name, _ in served.steps] == ["preprocess", "estimator"]
    assert without_preparation(served) is served  # a model logged before the step existed
    features = clean[bank_spec.dataset.feature_columns]
    assert np.array_equal(served.predict_proba(features), model.predict_proba(features))


def test_missing_feature_and_non_numbers_are_named(raw: pd.DataFrame, bank_spec: Spec) -> None:
    preparation = SpecPreparation.from_spec(bank_spec.dataset).fit(raw)
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['pdays'\]"):
        preparation.transform(raw.drop(columns=["pdays"]))
    with pytest.raises(ValueError, match="column 'age': expected numbers"):
        preparation.transform(raw.head(3).assign(age=["41", "forty", "39"]))


def test_integer_coded_categories_read_as_text_and_look_like_integers() -> None:
    """A season coded 1-4: 3, 3.0 and "3" are the same category; its raw type is int."""
    preparation = SpecPreparation(features=["season", "temp"], numeric=["temp"], integer=[])
    sent = pd.DataFrame({"season": [3, 1], "temp": [20.5, 11.0]})
    as_floats = sent.astype({"season": "float64"})
    as_text = pd.DataFrame({"season": ["3", "1"], "temp": [20.5, 11.0]})
    preparation.fit(as_text)
    for frame in (sent, as_floats, as_text):
        assert preparation.transform(frame)["season"].tolist() == ["3", "1"]
    model = Pipeline([(PREPARATION_STEP, preparation)])
    assert raw_like(as_text, model)["season"].dtype == np.int64
    padded = as_text.assign(season=["03", "1"])
    assert raw_like(padded, model)["season"].dtype != np.int64  # "03" is not the integer 3


def test_raw_like_head_is_typed_as_the_whole_frame_types_it() -> None:
    """The signature's rows: what a value past them (a missing count, a padded code) decides
    for the whole column decides for them too, and the rows equal the whole frame's."""
    preparation = SpecPreparation(
        features=["season", "visits", "pdays"],
        numeric=["visits", "pdays"],
        integer=["visits", "pdays"],
        sentinels={"pdays": [999]},
    )
    frame = pd.DataFrame(
        {
            "season": ["3", "1", "03"],
            "visits": [2.0, 5.0, None],
            "pdays": [4.0, None, None],
        }
    )
    model = Pipeline([(PREPARATION_STEP, preparation.fit(frame))])

    head = raw_like(frame, model, head=2)

    pd.testing.assert_frame_equal(head, raw_like(frame, model).head(2))
    assert head["season"].dtype != np.int64 and head["visits"].dtype == np.float64
    assert head["pdays"].tolist() == [4, 999] and head["pdays"].dtype == np.int64
    assert raw_like(frame.head(2), model)["visits"].dtype == np.int64  # the head alone differs
