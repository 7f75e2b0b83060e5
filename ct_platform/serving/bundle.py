"""The model bundle: a directory the server loads without mlflow, pandas or pickle.

Layout (see docs/architecture.md): `bundle.json` (metadata + input schema), `model.onnx`
(the whole pipeline as one graph; absent when conversion or parity failed) and
`model.skops` (the sklearn fallback, always present) and `manifest.json` (SHA-256 of every
other file, see `manifest`: a bundle whose files do not match it is refused). The fallback
pipeline has its column selectors bound to positions, so it scores a plain 2-D object
array: serving has no pandas.

`model.skops` never goes through pickle: skops loads it trusting only the types the file
itself needs, and only if every one of them is on the reviewed allowlist
(`ct_platform.registry.skops_types.TRUSTED_TYPE_ALLOWLIST`). `bundle.json` records that
list too, for review; a file needing anything it does not list is refused as well.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from ct_platform.atomic import write_atomically
from ct_platform.serving.config import DEFAULT_BATCH_THREADS
from ct_platform.serving.manifest import ManifestError, verify_manifest, write_manifest

if TYPE_CHECKING:
    from ct_platform.serving.schema import ParsedRows

BUNDLE_FORMAT = 1
META_FILE = "bundle.json"
ONNX_FILE = "model.onnx"
SKOPS_FILE = "model.skops"

# Requests of at least this many rows are scored by a second session with `batch_threads`
# intra-op threads (benchmarks/serving/README.md: where two threads start to pay on the
# bank model). How many: the server's `batch_threads` (spec `serving.batch_threads`).
WIDE_ROWS = 512
# Requests of at least this many rows, when the one-thread session scores them and the
# process may use two cores or more, are scored as two halves at once: the calling thread
# scores the first, the backend's helper thread the second. Below it the halves gain
# little and cost the fixed price of a second run and a thread hop (~0.1 ms of CPU):
# benchmarks/serving/README.md, "two halves".
SPLIT_ROWS = 512

Task = Literal["classification", "regression"]
ColumnType = Literal["int", "float", "category"]


class BundleError(ValueError):
    """The bundle directory is missing, malformed, or asks to trust a forbidden type."""


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: ColumnType
    categories: list[str] | None = None
    # Values meaning "unknown" (e.g. pdays=999): scored as missing, exactly like training.
    sentinels: list[float | str] = field(default_factory=list)
    nullable: bool = True
    # The spec's range for a numeric column (the data contract's); None: unbounded. Bundles
    # exported before the server checked ranges carry neither.
    min: float | None = None
    max: float | None = None

    @property
    def is_numeric(self) -> bool:
        return self.type != "category"


@dataclass(frozen=True)
class OnnxInfo:
    enabled: bool
    reason: str | None = None
    input_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParityInfo:
    """The ONNX parity gate's figures on the holdout (see `training.onnx_export`)."""

    max_abs_diff: float
    labels_identical: bool
    tolerance: float
    relative_tolerance: float
    max_rel_diff: float
    # Holdout rows with a value outside tolerance + relative_tolerance * |sklearn|.
    rows_over: int
    rows: int

    @property
    def passed(self) -> bool:
        return self.labels_identical and self.rows_over == 0


@dataclass(frozen=True)
class BundleMeta:
    name: str
    version: str
    fingerprint: str
    task: Task
    created_at: str
    columns: list[ColumnSchema]
    classes: list[Any] | None
    onnx: OnnxInfo
    parity: ParityInfo | None
    skops_trusted_types: list[str]
    format: int = BUNDLE_FORMAT
    # The version's semantic version (MLflow tag `ct.semver`); None in older bundles.
    semver: str | None = None
    # A regression target's declared range (spec `dataset.target_rules`); None: unbounded
    # (and in older bundles). `/feedback` refuses labels outside it.
    target_min: float | None = None
    target_max: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BundleMeta:
        if raw.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"unsupported bundle format {raw.get('format')!r}")
        try:
            return cls(
                **{
                    **raw,
                    "version": str(raw["version"]),
                    "columns": [ColumnSchema(**column) for column in raw["columns"]],
                    "onnx": OnnxInfo(**raw["onnx"]),
                    "parity": ParityInfo(**raw["parity"]) if raw.get("parity") else None,
                }
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{META_FILE} is malformed: {exc}") from None


class Prediction(NamedTuple):
    """Model output for n rows: labels + class probabilities, or regression values.

    A `NamedTuple`, made once a request: as immutable as a frozen dataclass, whose
    `__init__` sets each field through `object.__setattr__` (~8k instructions)."""

    labels: np.ndarray | None
    proba: np.ndarray | None
    values: np.ndarray | None


def check_trusted_types(types: list[str]) -> None:
    # Imported here: skops pulls scikit-learn, scipy and pandas, which the ONNX path never needs.
    from ct_platform.registry.skops_types import TRUSTED_TYPE_ALLOWLIST

    forbidden = sorted(set(types) - TRUSTED_TYPE_ALLOWLIST)
    if forbidden:
        raise BundleError(f"model.skops needs types outside the skops allowlist: {forbidden}")


def write_bundle(
    directory: str | Path,
    *,
    meta: BundleMeta,
    pipeline_skops_bytes: bytes,
    onnx_bytes: bytes | None,
) -> Path:
    """Write the bundle files, then `manifest.json` with the digest of each one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    check_trusted_types(meta.skops_trusted_types)
    if meta.onnx.enabled != (onnx_bytes is not None):
        raise BundleError("onnx.enabled must be true exactly when onnx_bytes are given")
    write_atomically(directory / SKOPS_FILE, pipeline_skops_bytes)
    if onnx_bytes is not None:
        write_atomically(directory / ONNX_FILE, onnx_bytes)
    else:
        (directory / ONNX_FILE).unlink(missing_ok=True)
    write_atomically(directory / META_FILE, meta.to_json().encode())
    write_manifest(directory)
    return directory


def read_meta(directory: str | Path) -> BundleMeta:
    path = Path(directory) / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"not a model bundle: {path} is missing") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    return BundleMeta.from_dict(raw)


def load_bundle(
    directory: str | Path, *, use_onnx: bool = True, batch_threads: int = DEFAULT_BATCH_THREADS
) -> LoadedModel:
    """Load a bundle for scoring: the ONNX graph when enabled (and wanted), else sklearn.

    `batch_threads`: intra-op threads of the ONNX session scoring requests of `WIDE_ROWS`
    rows or more (1: the one-thread session scores every request, those of `SPLIT_ROWS`
    rows or more as two halves at once when the process may use two cores; at most the
    cores this process may use).

    Raises:
        BundleError: the bundle is incomplete, malformed, or its files do not match its
            `manifest.json` (e.g. a `model.onnx` copied from another version).
    """
    directory = Path(directory).resolve()
    try:
        verify_manifest(directory)
    except ManifestError as exc:
        raise BundleError(str(exc)) from None
    meta = read_meta(directory)
    if use_onnx and meta.onnx.enabled:
        backend: OnnxBackend | SklearnBackend = OnnxBackend(
            directory / ONNX_FILE, meta, batch_threads=batch_threads
        )
    else:
        backend = SklearnBackend(directory / SKOPS_FILE, meta)
    return LoadedModel(directory=directory, meta=meta, backend=backend)


@dataclass(frozen=True)
class LoadedModel:
    directory: Path
    meta: BundleMeta
    backend: OnnxBackend | SklearnBackend

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def predict(self, rows: ParsedRows) -> Prediction:
        """Score rows parsed by this bundle's `InputSchema` (`serving.schema`)."""
        return self.backend.predict(rows)


class OnnxBackend:
    """Scores with ONNX Runtime: a one-thread session, and for requests of at least
    `WIDE_ROWS` rows a second session with `batch_threads` intra-op threads (at most the
    cores the process may use; none when that is 1), which splits the trees' work.
    Without that second session, on two cores or more, requests of at least `SPLIT_ROWS`
    rows are split by rows instead: two halves scored at once by the one-thread session,
    one in the calling thread, one in the backend's helper thread."""

    name = "onnx"

    def __init__(
        self, path: Path, meta: BundleMeta, *, batch_threads: int = DEFAULT_BATCH_THREADS
    ) -> None:
        # One thread: a small request gains nothing from intra-op threading (the threads'
        # hand-offs cost more than they save), and the event loop's core is busy anyway.
        self._session = _onnx_session(path, threads=1)
        cores = len(os.sched_getaffinity(0))
        wide = min(batch_threads, cores)
        self.batch_threads = max(wide, 1)
        self._wide_session = _onnx_session(path, threads=wide) if wide > 1 else None
        # The thread scoring a split request's second half; its thread starts with the
        # first split request and serves every one after (none per request).
        self._halves = (
            ThreadPoolExecutor(1, thread_name_prefix="onnx-half")
            if self._wide_session is None and cores > 1
            else None
        )
        # (output names, feeds, run options) -> outputs, per session.
        self._run = _binding(self._session).run
        self._wide_run = _binding(self._wide_session).run if self._wide_session else None
        # Bind by position: skl2onnx may have renamed inputs (emp.var.rate -> emp_var_rate).
        self._input_names = [graph_input.name for graph_input in self._session.get_inputs()]
        if len(self._input_names) != len(meta.columns):
            raise BundleError(
                f"{path.name} has {len(self._input_names)} inputs, schema has {len(meta.columns)}"
            )
        # Each input: (name, True, row of the numeric block) or (name, False, schema position).
        numeric_rows = count()
        self._inputs = [
            (name, True, next(numeric_rows)) if column.is_numeric else (name, False, position)
            for position, (name, column) in enumerate(
                zip(self._input_names, meta.columns, strict=True)
            )
        ]
        self._output_names = [output.name for output in self._session.get_outputs()]
        self._classifier = meta.task == "classification"
        self._categorical = [index for _, is_numeric, index in self._inputs if not is_numeric]
        self._per_thread = threading.local()

    def predict(self, rows: ParsedRows) -> Prediction:
        n_rows = rows.n_rows
        if n_rows == 1:
            outputs = self._run(self._output_names, self._one_row_feeds(rows), None)
        elif n_rows >= WIDE_ROWS and self._wide_run is not None:
            outputs = self._wide_run(self._output_names, self._feeds(rows), None)
        elif n_rows >= SPLIT_ROWS and self._halves is not None:
            outputs = self._run_in_halves(self._feeds(rows), n_rows // 2)
        else:
            outputs = self._run(self._output_names, self._feeds(rows), None)
        if self._classifier:
            return Prediction(labels=outputs[0].ravel(), proba=outputs[1], values=None)
        return Prediction(labels=None, proba=None, values=outputs[0].ravel())

    def _run_in_halves(self, feeds: dict[str, np.ndarray], half: int) -> list[np.ndarray]:
        """The one-thread session's outputs for `feeds` (each input (n_rows, 1)), its rows
        `[:half]` scored in this thread while the helper thread scores `[half:]` (ONNX
        Runtime releases the GIL while it runs). The trees score each row on its own, so
        the outputs are bitwise those of one run. Should the helper not have started on
        its half when this thread is done with the first (busy with another request, or
        the box is loaded), this thread takes the half back and scores it itself: a
        request never waits for the helper to be scheduled."""
        names = self._output_names
        head_feeds = {name: array[:half] for name, array in feeds.items()}
        tail_feeds = {name: array[half:] for name, array in feeds.items()}
        second = self._halves.submit(self._run, names, tail_feeds, None)
        head = self._run(names, head_feeds, None)
        tail = self._run(names, tail_feeds, None) if second.cancel() else second.result()
        return [np.concatenate(pair) for pair in zip(head, tail, strict=True)]

    def _feeds(self, rows: ParsedRows) -> dict[str, np.ndarray]:
        # One float32 conversion for every numeric column, shaped once so that each
        # numeric input is a (n_rows, 1) view of it, with no per-input reshape.
        shape = (rows.n_rows, 1)
        numeric = rows.numeric.astype(np.float32).reshape(-1, *shape)
        columns = rows.columns
        return {
            name: numeric[index] if is_numeric else columns[index].reshape(shape)
            for name, is_numeric, index in self._inputs
        }

    def _one_row_feeds(self, rows: ParsedRows) -> dict[str, np.ndarray]:
        """One row's inputs, copied into this thread's (1, 1) input arrays, made once: two
        copies a request instead of a new array per input. Per thread, because a request
        scored in a worker thread may run while the loop scores another; `session.run`
        has read them by the time it returns."""
        feeds = getattr(self._per_thread, "one_row", None)
        if feeds is None:
            feeds = self._per_thread.one_row = _OneRowFeeds(self._inputs)
        np.copyto(feeds.numeric, rows.numeric, casting="same_kind")
        if self._categorical:
            values = rows.values
            if values is None:  # a row the block path parsed: no plain values
                columns = rows.columns
                np.concatenate([columns[i] for i in self._categorical], out=feeds.categorical)
            else:
                feeds.categorical[:] = [values[i] for i in self._categorical]
        return feeds.by_name


class _OneRowFeeds:
    """(1, 1) input arrays for one row, by input name, viewing two blocks that a request
    fills: `numeric` (n_numeric, 1) float32, `categorical` (n_categorical,) object."""

    def __init__(self, inputs: list[tuple[str, bool, int]]) -> None:
        n_numeric = sum(is_numeric for _, is_numeric, _ in inputs)
        numeric = np.zeros((n_numeric, 1, 1), dtype=np.float32)
        categorical = np.full((len(inputs) - n_numeric, 1, 1), "", dtype=object)
        categorical_rows = count()
        self.by_name = {
            name: numeric[index] if is_numeric else categorical[next(categorical_rows)]
            for name, is_numeric, index in inputs
        }
        self.numeric = numeric.reshape(n_numeric, 1)
        self.categorical = categorical.reshape(-1)


def _binding(session: Any) -> Any:
    """What `session.run` calls once it has checked, in Python, that the feed names every
    graph input: two binding calls per input, 55k instructions a one-row request on the
    bank model's 15 inputs (a fifth of `session.run`'s). Feeds built from the graph's own
    input list cannot fail that check. The session itself (same `run` arguments) if an
    onnxruntime version has no `_sess`."""
    return getattr(session, "_sess", session)


def _onnx_session(path: Path, *, threads: int) -> Any:
    """An ONNX Runtime CPU session of `path` with `threads` intra-op threads."""
    import onnxruntime as ort  # only when a graph is loaded: `read_meta` callers skip it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Pool threads spin while a run lasts (a sleeping thread woke too late to share the
    # work on a busy box: two threads without spinning scored 1,000 rows no faster than
    # one) and stop at its end, so they never burn a core between requests.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise BundleError(f"cannot load {path}: {exc}") from None


class SklearnBackend:
    name = "sklearn"

    def __init__(self, path: Path, meta: BundleMeta) -> None:
        # Only bundles without a usable ONNX graph pay for skops (scikit-learn, scipy, pandas).
        import skops.io as sio

        # A bundle.json asking to trust more than the allowlist is refused outright.
        check_trusted_types(meta.skops_trusted_types)
        try:
            # What the file itself needs decides, never a list stored beside it.
            needed = sio.get_untrusted_types(file=path)
        except FileNotFoundError:
            raise BundleError(f"not a model bundle: {path} is missing") from None
        check_trusted_types(needed)
        unlisted = sorted(set(needed) - set(meta.skops_trusted_types))
        if unlisted:
            raise BundleError(f"{path.name} holds types not listed in {META_FILE}: {unlisted}")
        self._pipeline = sio.load(path, trusted=needed)
        self._width = len(meta.columns)
        self._classifier = meta.task == "classification"
        self._has_proba = hasattr(self._pipeline, "predict_proba")

    def predict(self, rows: ParsedRows) -> Prediction:
        table = np.empty((rows.n_rows, self._width), dtype=object)
        for position, values in enumerate(rows.columns):
            table[:, position] = values
        predicted = self._pipeline.predict(table)
        if not self._classifier:
            return Prediction(labels=None, proba=None, values=predicted)
        proba = self._pipeline.predict_proba(table) if self._has_proba else None
        return Prediction(labels=predicted, proba=proba, values=None)
