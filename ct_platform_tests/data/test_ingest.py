"""One batch through `ingest_batch`: keys, content checks, idempotence."""

from __future__ import annotations

import pandas as pd
import pytest

from ct_platform.data.ingest import LandedFileChanged, ingest_batch
from ct_platform.data.landing import file_sha256, versioned_key
from ct_platform.settings import Spec


def test_versioned_key_reads_its_file_and_checks_the_promised_hash(
    spec: Spec, write_batch, bank_batch: pd.DataFrame
) -> None:
    path = write_batch(bank_batch, "batch-00001.csv")
    key = versioned_key(path.name, file_sha256(path))
    outcome = ingest_batch(key, spec, spec.paths)
    assert outcome.passed and outcome.valid.key == key
    assert ingest_batch(key, spec, spec.paths).valid == outcome.valid  # idempotent

    write_batch(bank_batch.iloc[:400], "batch-00001.csv")  # overwritten after ingestion
    with pytest.raises(LandedFileChanged, match=r"batch batch-00001\.csv@[0-9a-f]{12}: .*changed"):
        ingest_batch(key, spec, spec.paths)
    other = versioned_key(path.name, "0" * 64)
    with pytest.raises(LandedFileChanged, match=r"sha256 000000000000\.\.\., now"):
        ingest_batch(other, spec, spec.paths)
