"""Training sets on disk: train and holdout Parquet, keyed by the data fingerprint."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ct_platform.atomic import write_atomically
from ct_platform.settings import Paths

REF_FILE = "ref.json"

if TYPE_CHECKING:  # heavy: the code location imports this module for TrainingSetRef only
    import pandas as pd


@dataclass(frozen=True)
class TrainingSetRef:
    """Where a training set lives and what it was built from; small enough to pass around."""

    fingerprint: str
    batch_keys: tuple[str, ...]
    directory: Path
    train_rows: int
    holdout_rows: int
    # The newest batch in the window: what the data-drift report compares with the reference.
    newest_batch: Path
    # Rows of the window's batches that earlier batches of it had delivered: counted once.
    redelivered_rows: int = 0
    # Holdout rows identical to a training row, dropped: the holdout stays out-of-sample.
    holdout_in_train_dropped: int = 0

    @property
    def train_path(self) -> Path:
        return self.directory / "train.parquet"

    @property
    def holdout_path(self) -> Path:
        return self.directory / "holdout.parquet"

    @property
    def window_path(self) -> Path:
        """Train and holdout together, time-ordered: what a whole-window refit learns from."""
        return self.directory / "window.parquet"

    def load_train(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.train_path)

    def load_holdout(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.holdout_path)

    def to_json(self) -> str:
        fields = {**asdict(self), "directory": str(self.directory)}
        return json.dumps({**fields, "newest_batch": str(self.newest_batch)})

    @classmethod
    def from_json(cls, text: str) -> TrainingSetRef:
        fields = json.loads(text)
        return cls(
            fingerprint=fields["fingerprint"],
            batch_keys=tuple(fields["batch_keys"]),
            directory=Path(fields["directory"]),
            train_rows=int(fields["train_rows"]),
            holdout_rows=int(fields["holdout_rows"]),
            newest_batch=Path(fields["newest_batch"]),
            # Absent from refs saved before rows were compared by content.
            redelivered_rows=int(fields.get("redelivered_rows", 0)),
            holdout_in_train_dropped=int(fields.get("holdout_in_train_dropped", 0)),
        )


def save_window(ref: TrainingSetRef) -> pd.DataFrame:
    """Train then holdout as one frame, also written to `ref.window_path` (whole-file)."""
    import pandas as pd

    window = pd.concat([ref.load_train(), ref.load_holdout()], ignore_index=True)
    _write_parquet_atomically(window, ref.window_path)
    return window


class MissingTrainingSet(LookupError):
    """No training set was saved for a data fingerprint."""


def save_training_set(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    fingerprint: str,
    batch_keys: list[str],
    newest_batch: Path,
    paths: Paths,
    redelivered_rows: int = 0,
    holdout_in_train_dropped: int = 0,
) -> TrainingSetRef:
    directory = paths.datasets / fingerprint[:16]
    directory.mkdir(parents=True, exist_ok=True)
    ref = TrainingSetRef(
        fingerprint,
        tuple(batch_keys),
        directory,
        len(train),
        len(holdout),
        newest_batch,
        redelivered_rows,
        holdout_in_train_dropped,
    )
    # Two runs on the same data write the same files: each replaces them whole, so a reader
    # (or a run killed mid-write) never leaves or sees half a Parquet file.
    _write_parquet_atomically(train, ref.train_path)
    _write_parquet_atomically(holdout, ref.holdout_path)
    # Written last: a directory with its ref file holds a whole training set.
    write_atomically(directory / REF_FILE, ref.to_json())
    return ref


def load_training_set(fingerprint: str | None, paths: Paths) -> TrainingSetRef:
    """The training set a model version was fitted on, found by its data fingerprint (a
    version's own inputs, whatever a later run built since).

    Raises `MissingTrainingSet` naming the fingerprint when none was saved under `paths`.
    """
    ref_file = paths.datasets / (fingerprint or "")[:16] / REF_FILE
    if not fingerprint or not ref_file.is_file():
        raise MissingTrainingSet(
            f"no training set saved for data fingerprint {fingerprint!r} under {paths.datasets}"
        )
    ref = TrainingSetRef.from_json(ref_file.read_text())
    if ref.fingerprint != fingerprint:
        raise MissingTrainingSet(
            f"{ref_file} holds fingerprint {ref.fingerprint[:12]}, not {fingerprint[:12]}"
        )
    return ref


def _write_parquet_atomically(frame: pd.DataFrame, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.to_parquet(temporary, index=False)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
