"""Fixtures for the data package tests: small real bank batches as files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ct_platform.settings import Spec


@pytest.fixture
def bank_batch(bank_frame: pd.DataFrame) -> pd.DataFrame:
    """500 consecutive raw rows of the demo data: one realistic, valid batch."""
    return bank_frame.iloc[1000:1500].reset_index(drop=True)


@pytest.fixture
def quarantine_dir(spec: Spec) -> Path:
    return spec.paths.quarantine
