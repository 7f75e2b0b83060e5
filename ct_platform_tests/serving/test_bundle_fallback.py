"""Bundle loading rules (never unpickle, allowlisted types only) and the sklearn fallback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline

from ct_platform.serving.bundle import BundleError, load_bundle, read_meta
from ct_platform.serving.manifest import MANIFEST_FILE, write_manifest
from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import (
    parsed_rows,
    raw_rows,
    run_module_server,
    split_payload,
)

N = 200


def test_onnx_and_fallback_agree(bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec) -> None:
    rows = parsed_rows(holdout, bank_spec)
    onnx_model, sklearn_model = load_bundle(bundle_dir), load_bundle(bundle_dir, use_onnx=False)
    assert (onnx_model.backend_name, sklearn_model.backend_name) == ("onnx", "sklearn")
    onnx_out, sklearn_out = onnx_model.predict(rows), sklearn_model.predict(rows)
    assert (onnx_out.labels == sklearn_out.labels).all()
    assert np.abs(onnx_out.proba - sklearn_out.proba).max() < 1e-4


def test_skops_file_with_unlisted_type_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    """A skops file needing a type off the allowlist never loads, whatever bundle.json says."""
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    # A scikit-learn object that skops does not trust by default and we never allowlisted.
    from sklearn.neighbors import KDTree

    (tampered / "model.skops").write_bytes(sio.dumps(KDTree(np.zeros((4, 2)))))
    write_manifest(tampered)  # the manifest proves integrity, not trust: re-hashed here
    with pytest.raises(BundleError, match="allowlist"):
        load_bundle(tampered, use_onnx=False)


def test_bundle_json_cannot_widen_the_allowlist(bundle_dir: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    meta = json.loads((tampered / "bundle.json").read_text())
    meta["skops_trusted_types"].append("builtins.eval")
    (tampered / "bundle.json").write_text(json.dumps(meta))
    write_manifest(tampered)
    with pytest.raises(BundleError, match=r"builtins\.eval"):
        load_bundle(tampered, use_onnx=False)


def test_missing_or_malformed_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="missing"):
        read_meta(tmp_path)
    (tmp_path / "bundle.json").write_text('{"format": 99}')
    with pytest.raises(BundleError, match="format"):
        read_meta(tmp_path)


def test_model_copied_from_another_version_is_refused(
    bundle_dir: Path, other_model_bundle: Path, tmp_path: Path
) -> None:
    """The issue's example: v3's model.onnx copied into v1 would be served as v1."""
    tampered = tmp_path / "bank_marketing-v1"
    shutil.copytree(bundle_dir, tampered)
    shutil.copyfile(other_model_bundle / "model.onnx", tampered / "model.onnx")
    with pytest.raises(BundleError, match=r"bundle file model\.onnx does not match manifest"):
        load_bundle(tampered)
    with pytest.raises(BundleError, match=r"model\.onnx does not match"):
        load_bundle(tampered, use_onnx=False)  # the whole bundle is refused, not one backend


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: (d / MANIFEST_FILE).unlink(), "bundle has no manifest.json"),
        (lambda d: (d / "model.skops").unlink(), "listed in manifest.json is missing: model.skops"),
        (lambda d: (d / "notes.txt").write_text("x"), "not listed in manifest.json: notes.txt"),
        (
            lambda d: (d / "bundle.json").write_text((d / "bundle.json").read_text() + " "),
            "bundle file bundle.json does not match",
        ),
        (lambda d: (d / MANIFEST_FILE).write_text("{"), "manifest.json is not valid JSON"),
        (
            lambda d: (d / MANIFEST_FILE).write_text('{"algorithm": "md5", "files": {}}'),
            "must say algorithm 'sha256'",
        ),
    ],
    ids=["no-manifest", "missing-file", "extra-file", "changed-file", "bad-json", "algorithm"],
)
def test_manifest_mismatch_refuses_the_bundle(
    bundle_dir: Path, tmp_path: Path, tamper, message: str
) -> None:
    tampered = tmp_path / "bundle"
    shutil.copytree(bundle_dir, tampered)
    load_bundle(tampered)  # an intact copy loads
    tamper(tampered)
    with pytest.raises(BundleError) as refused:
        load_bundle(tampered)
    assert message in str(refused.value)


def test_manifest_lists_every_file_with_its_sha256(bundle_dir: Path) -> None:
    import hashlib

    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    files = sorted(p.name for p in bundle_dir.iterdir() if p.name != MANIFEST_FILE)
    assert manifest["algorithm"] == "sha256"
    assert sorted(manifest["files"]) == files == ["bundle.json", "model.onnx", "model.skops"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle_dir / name).read_bytes()).hexdigest() == digest


@pytest.fixture(scope="module")
def fallback_server(sklearn_only_bundle: Path, tmp_path_factory) -> Iterator[str]:
    """`python -m ct_platform.serving` on a bundle whose ONNX graph is disabled."""
    home = tmp_path_factory.mktemp("fallback_home")
    process, url = run_module_server(
        ["--bundle", str(sklearn_only_bundle)], env={"CT_HOME": str(home)}, log=home / "server.log"
    )
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_sklearn_only_bundle_serves_pipeline_predictions(
    fallback_server: str, fitted_pipeline: Pipeline, holdout: pd.DataFrame, bank_spec: Spec
) -> None:
    rows = raw_rows(holdout, bank_spec, N)
    response = httpx.post(f"{fallback_server}/invocations", json=split_payload(rows), timeout=30)
    assert response.status_code == 200, response.text
    features = holdout[bank_spec.dataset.feature_columns].iloc[:N]
    assert response.json() == {"predictions": fitted_pipeline.predict(features).tolist()}
    metadata = httpx.get(f"{fallback_server}/v2/models/bank_marketing").json()
    assert metadata["platform"] == "scikit-learn"
    infer = httpx.post(
        f"{fallback_server}/v2/models/bank_marketing/infer",
        json={
            "inputs": [
                {
                    "name": "table",
                    "shape": [N, len(rows[0])],
                    "datatype": "BYTES",
                    "data": [row[c] for row in rows for c in rows[0]],
                }
            ]
        },
        timeout=30,
    ).json()
    proba = np.array(infer["outputs"][1]["data"]).reshape(N, 2)
    assert np.array_equal(proba, fitted_pipeline.predict_proba(features))
