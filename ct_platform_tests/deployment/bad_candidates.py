"""Real bad candidates: bundles that really misbehave the way a rollout must catch.

Each builder fits a real pipeline on bank rows and writes a real bundle the server loads
like any other; none of them is told to fail. What makes each one bad is how it was made:

- `slow`: a 4,000-tree random forest shipped without an ONNX graph (as a bundle whose
  graph failed the parity gate is), so the server scores it with scikit-learn, tree by
  tree: a few hundred milliseconds a row (per-tree overhead, not depth) where the ONNX
  champion takes well under one;
- `errors`: trained on customers without a personal loan only, with a one-hot encoder that
  refuses categories it never saw (`handle_unknown="error"`): its ONNX graph fails on every
  row with `loan = "yes"`, a value the contract admits (about 15 % of bank rows);
- `shifted`: trained on flipped labels, so its scores are the mirror image of stable's.

Used by the rollout proofs (test_delivery_proofs.py) and benchmarks/delivery/run.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.pipeline import Pipeline

from ct_platform.serving.bundle import BundleMeta, OnnxInfo, check_trusted_types, write_bundle
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle, positional_pipeline, schema_columns
from ct_platform.training.pipeline import build_pipeline
from ct_platform.training.preparation import without_preparation

# Per-tree overhead (about 25-50 us a tree on one core) makes the fallback slow whatever the
# box: 4,000 shallow trees take 100-200 ms a row on an idle core, several times the proofs'
# p99 limit once requests queue, and far more on a busy box (500 trees answered in about 30
# ms on a quiet one: under the limit, so that candidate was not "slow" everywhere).
SLOW_TREES = 4000
# The category the `errors` candidate never saw in training.
UNSEEN_COLUMN, UNSEEN_VALUE = "loan", "yes"

BadCandidate = Callable[[Spec, pd.DataFrame, pd.DataFrame, Path, str], Path]


def fitted(spec: Spec, train: pd.DataFrame, target: pd.Series, **params: object) -> Pipeline:
    """The spec's pipeline with `params` set (`step__param` names), fitted."""
    pipeline = build_pipeline(spec).set_params(**params)
    return pipeline.fit(train[spec.dataset.feature_columns], target)


def slow_candidate(
    spec: Spec, train: pd.DataFrame, holdout: pd.DataFrame, directory: Path, version: str
) -> Path:
    """A big random forest without an ONNX graph: the server's scikit-learn fallback."""
    forest = spec.model_copy(
        update={
            "model": spec.model.model_copy(
                update={
                    "estimator": "sklearn.ensemble.RandomForestClassifier",
                    "params": {"n_estimators": SLOW_TREES, "max_depth": 3, "random_state": 0},
                }
            )
        }
    )
    pipeline = fitted(forest, train, train[spec.dataset.target])
    return _sklearn_only_bundle(
        pipeline, spec, directory, version, reason=f"{SLOW_TREES}-tree forest, no ONNX graph"
    )


def errors_candidate(
    spec: Spec, train: pd.DataFrame, holdout: pd.DataFrame, directory: Path, version: str
) -> Path:
    """Never saw `loan = "yes"` and refuses unknown categories: fails on those rows."""
    seen = train[train[UNSEEN_COLUMN] != UNSEEN_VALUE]
    pipeline = fitted(
        spec,
        seen,
        seen[spec.dataset.target],
        preprocess__categorical__handle_unknown="error",
        estimator__max_iter=20,
    )
    # The parity check runs on rows like the training rows: the graph itself is sound.
    checked_on = holdout[holdout[UNSEEN_COLUMN] != UNSEEN_VALUE]
    return _bundle(pipeline, spec, checked_on, directory, version)


def shifted_candidate(
    spec: Spec, train: pd.DataFrame, holdout: pd.DataFrame, directory: Path, version: str
) -> Path:
    """Trained on flipped labels: high scores where stable's are low."""
    flipped = 1 - train[spec.dataset.target]
    pipeline = fitted(spec, train, flipped, estimator__max_iter=20)
    return _bundle(pipeline, spec, holdout, directory, version)


BAD_CANDIDATES: dict[str, BadCandidate] = {
    "slow": slow_candidate,
    "errors": errors_candidate,
    "shifted": shifted_candidate,
}


def _bundle(
    pipeline: Pipeline, spec: Spec, holdout: pd.DataFrame, directory: Path, version: str
) -> Path:
    return build_bundle(
        pipeline,
        spec,
        name=spec.model.name,
        version=version,
        fingerprint=f"bad-{directory.name}",
        holdout=holdout,
        directory=directory,
    )


def _sklearn_only_bundle(
    pipeline: Pipeline, spec: Spec, directory: Path, version: str, *, reason: str
) -> Path:
    """A bundle with `model.skops` only, exactly as `build_bundle` writes one whose graph
    could not be exported."""
    pipeline = without_preparation(pipeline)
    skops_bytes = sio.dumps(positional_pipeline(pipeline, spec))
    trusted_types = sorted(sio.get_untrusted_types(data=skops_bytes))
    check_trusted_types(trusted_types)
    meta = BundleMeta(
        name=spec.model.name,
        version=version,
        fingerprint=f"bad-{directory.name}",
        task=spec.dataset.task,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        columns=schema_columns(spec),
        classes=np.asarray(pipeline.classes_).tolist(),
        onnx=OnnxInfo(enabled=False, reason=reason),
        parity=None,
        skops_trusted_types=trusted_types,
    )
    return write_bundle(directory, meta=meta, pipeline_skops_bytes=skops_bytes, onnx_bytes=None)
