"""Monitoring fixtures: the bank data typed like a cleaned frame, split into samples of one
distribution, plus a current sample with drift planted in three columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ct_platform.monitoring.frames import typed_features
from ct_platform.settings import load_spec
from ct_platform_tests.conftest import BANK_SPEC

SAMPLE_ROWS = 20_000
# Planted drift, one per kind the check must catch:
SHIFTED = "age"  # numeric location shift: +8 years (about 0.8 standard deviations)
NEW_CATEGORY = "job"  # a category the reference never saw, on 30 % of rows
CHANGED_MIX = "marital"  # known categories, different proportions
PLANTED = (SHIFTED, NEW_CATEGORY, CHANGED_MIX)


@pytest.fixture(scope="session")
def bank_features(bank_frame: pd.DataFrame) -> pd.DataFrame:
    return typed_features(bank_frame, load_spec(BANK_SPEC).dataset, where="bank data")


@pytest.fixture(scope="session")
def same_distribution(bank_features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two disjoint random samples of the whole (time-shuffled) data set: no drift."""
    shuffled = bank_features.sample(frac=1.0, random_state=7).reset_index(drop=True)
    reference = shuffled.iloc[:SAMPLE_ROWS].reset_index(drop=True)
    current = shuffled.iloc[SAMPLE_ROWS : 2 * SAMPLE_ROWS].reset_index(drop=True)
    return reference, current


def as_landed(frame: pd.DataFrame) -> pd.DataFrame:
    """A cleaned frame as a data file holds it: each numeric sentinel written back where the
    cleaned frame has NaN for it (`pdays` 999), as the raw bank data has no missing value."""
    dataset = load_spec(BANK_SPEC).dataset
    sentinels = {
        name: next(s for s in column.sentinels if not isinstance(s, str))
        for name, column in dataset.columns.items()
        if name in frame.columns and any(not isinstance(s, str) for s in column.sentinels)
    }
    return frame.fillna(sentinels)


@pytest.fixture(scope="session")
def planted(same_distribution: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    """The no-drift current sample with drift planted in `PLANTED` only."""
    _, current = same_distribution
    return plant_drift(current)


def plant_drift(frame: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    drifted = frame.copy()
    drifted[SHIFTED] = drifted[SHIFTED] + 8.0
    new = rng.random(len(frame)) < 0.3
    drifted.loc[new, NEW_CATEGORY] = "crypto-trader"
    single = rng.random(len(frame)) < 0.6
    drifted.loc[single, CHANGED_MIX] = "single"
    return drifted
