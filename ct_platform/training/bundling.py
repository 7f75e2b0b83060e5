"""Turn a fitted pipeline into a serving bundle: ONNX export, parity gate, skops fallback.

`build_bundle` is what the deployment step calls after loading the champion from MLflow.
When the pipeline cannot be converted, or the graph fails the parity gate, the bundle is
written sklearn-only and `bundle.json` records why.

A bundle is built in a hidden sibling folder, sealed with `manifest.json` (SHA-256 of every
file) and only then renamed to its final name: a folder with that name is always complete,
whatever line a killed export stopped at, and a file swapped in later fails verification.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from ct_platform.serving.bundle import (
    BundleMeta,
    ColumnSchema,
    OnnxInfo,
    ParityInfo,
    check_trusted_types,
    read_meta,
    write_bundle,
)
from ct_platform.serving.manifest import MANIFEST_FILE, write_manifest
from ct_platform.settings import Spec
from ct_platform.training.onnx_export import (
    OnnxExportError,
    check_parity,
    onnx_input_names,
    pipeline_to_onnx,
)
from ct_platform.training.preparation import without_preparation


def build_bundle(
    pipeline: Pipeline,
    spec: Spec,
    *,
    name: str,
    version: str | int,
    fingerprint: str,
    holdout: pd.DataFrame,
    directory: Path | None = None,
    attachments: Callable[[BundleMeta], Mapping[str, bytes]] | None = None,
    semver: str | None = None,
) -> Path:
    """Write `<CT_HOME>/bundles/<name>-v<version>/` (or `directory`) and return its path.

    `semver` is the version's semantic version (`training.semver`), shown in the server's
    metadata.

    An existing folder of that name is replaced (in one rename) by the complete new bundle.
    The bundle holds the pipeline without its input preparation: the server prepares requests.
    `attachments(meta)` gives extra files (name -> bytes, e.g. the model card), sealed in
    the manifest with the rest.
    """
    pipeline = without_preparation(pipeline)
    directory = directory or spec.paths.bundles / f"{name}-v{version}"
    onnx_bytes, onnx_info, parity = _export_onnx(pipeline, spec, holdout)
    skops_bytes = sio.dumps(positional_pipeline(pipeline, spec))
    trusted_types = sorted(sio.get_untrusted_types(data=skops_bytes))
    check_trusted_types(trusted_types)
    meta = BundleMeta(
        name=name,
        version=str(version),
        fingerprint=fingerprint,
        task=spec.dataset.task,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        columns=schema_columns(spec),
        classes=np.asarray(pipeline.classes_).tolist() if is_classifier(pipeline) else None,
        onnx=onnx_info,
        parity=parity,
        skops_trusted_types=trusted_types,
        semver=semver,
        target_min=rules.min if (rules := spec.dataset.target_rules) else None,
        target_max=rules.max if rules else None,
    )
    extra = attachments(meta) if attachments else {}

    def fill(staging: Path) -> None:
        write_bundle(staging, meta=meta, pipeline_skops_bytes=skops_bytes, onnx_bytes=onnx_bytes)
        _write_files(staging, extra)

    return _write_sealed(directory, fill)


def gated_bundle_dir(spec: Spec, name: str, version: str | int) -> Path:
    """Where the artifact gates leave `version`'s bundle (sealed, without its card) for the
    export to finish with `seal_with_attachments`: a hidden sibling of its final folder."""
    return spec.paths.bundles / f".{name}-v{version}.gated"


def seal_with_attachments(
    source: Path, directory: Path, attachments: Callable[[BundleMeta], Mapping[str, bytes]]
) -> Path:
    """Write `directory`: the bundle `source` (ONNX graph, parity figures, skops fallback as
    built) plus the files `attachments(meta)` gives, sealed anew; then remove `source`.

    The caller checks first that `source` is the right version's and verifies; this spares
    a second ONNX export and parity run of the same model on the same holdout.
    """
    meta = read_meta(source)
    extra = attachments(meta)

    def fill(staging: Path) -> None:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / MANIFEST_FILE).unlink()  # re-sealed below, with the attachments
        _write_files(staging, extra)

    _write_sealed(directory, fill)
    shutil.rmtree(source, ignore_errors=True)
    return directory


def _write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        (folder / name).write_bytes(content)


def _write_sealed(directory: Path, fill: Callable[[Path], None]) -> Path:
    """`fill` a hidden sibling folder, seal it, rename it to `directory`."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new-"))
    try:
        fill(staging)
        write_manifest(staging)  # last: it seals what was written
        _move_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _move_into_place(staging: Path, directory: Path) -> None:
    """Rename the finished `staging` folder to `directory`, replacing any folder there."""
    try:
        staging.rename(directory)
        return
    except OSError:
        if not directory.exists():
            raise
    # An older folder holds the name (a leftover, or a bundle that failed verification):
    # move it aside whole, then take its place, so no reader ever sees a mix of the two.
    retired = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
    directory.rename(retired / directory.name)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)


def schema_columns(spec: Spec) -> list[ColumnSchema]:
    dataset = spec.dataset
    return [
        ColumnSchema(
            name=name,
            type=dataset.columns[name].type,
            categories=dataset.columns[name].categories,
            sentinels=list(dataset.columns[name].sentinels),
            nullable=dataset.columns[name].nullable,
            min=dataset.columns[name].min,
            max=dataset.columns[name].max,
        )
        for name in dataset.feature_columns
    ]


def positional_pipeline(pipeline: Pipeline, spec: Spec) -> Pipeline:
    """A copy of the fitted pipeline that scores a 2-D array in feature-column order.

    The fitted ColumnTransformer selects columns by name, which only works on a DataFrame;
    serving has no pandas. Rebinding each selector to positions (and forgetting the fitted
    column names, which would only trigger a warning per call) leaves the maths unchanged.
    """
    positional = copy.deepcopy(pipeline)
    positions = {name: index for index, name in enumerate(spec.dataset.feature_columns)}
    for step in positional.named_steps.values():
        if isinstance(step, ColumnTransformer):
            step.transformers_ = [
                (label, transformer, _positions(columns, positions))
                for label, transformer, columns in step.transformers_
            ]
            for transformer in step.named_transformers_.values():
                _forget_feature_names(transformer)
        _forget_feature_names(step)
    return positional


def _positions(columns: object, positions: dict[str, int]) -> object:
    if isinstance(columns, str):
        return positions[columns]
    if isinstance(columns, list | tuple | np.ndarray) and all(isinstance(c, str) for c in columns):
        return [positions[column] for column in columns]
    return columns  # already positional (or a boolean mask / slice from the remainder)


def _forget_feature_names(estimator: object) -> None:
    if "feature_names_in_" in getattr(estimator, "__dict__", {}):
        del estimator.feature_names_in_


def _export_onnx(
    pipeline: Pipeline, spec: Spec, holdout: pd.DataFrame
) -> tuple[bytes | None, OnnxInfo, ParityInfo | None]:
    try:
        onnx_bytes = pipeline_to_onnx(pipeline, spec)
    except OnnxExportError as exc:
        return None, OnnxInfo(enabled=False, reason=str(exc)), None
    result = check_parity(pipeline, onnx_bytes, holdout, spec)
    parity = ParityInfo(
        max_abs_diff=result.max_abs_diff,
        labels_identical=result.labels_identical,
        tolerance=result.tolerance,
        relative_tolerance=result.relative_tolerance,
        max_rel_diff=result.max_rel_diff,
        rows_over=result.rows_over,
        rows=result.n_rows,
    )
    if not result.passed:
        return None, OnnxInfo(enabled=False, reason=f"parity gate: {result.reason}"), parity
    return onnx_bytes, OnnxInfo(enabled=True, input_names=onnx_input_names(onnx_bytes)), parity
