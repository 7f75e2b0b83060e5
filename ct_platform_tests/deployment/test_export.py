"""Export the champion from a real MLflow store (SQLite under the test's CT_HOME)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.deployment import DeploymentError, export_champion_bundle, pointed_bundle
from ct_platform.deployment.export import HOLDOUT_ARTIFACT, default_registry
from ct_platform.governance.lifecycle import set_champion
from ct_platform.serving.bundle import ONNX_FILE, SKOPS_FILE, load_bundle, read_meta
from ct_platform.serving.manifest import MANIFEST_FILE, ManifestError, verify_manifest
from ct_platform.settings import Spec
from ct_platform.training.bundling import build_bundle, gated_bundle_dir
from ct_platform_tests.deployment.conftest import register


def test_export_writes_a_checked_bundle_and_points_champion_at_it(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = train_holdout
    registry = default_registry(spec)
    info = register(registry, spec, train, holdout, fingerprint="fp-one", tmp_path=tmp_path)
    set_champion(registry, info.version, spec)

    bundle_dir = export_champion_bundle(spec, registry)

    assert bundle_dir == spec.paths.bundles / f"{spec.model.name}-v{info.version}"
    assert (bundle_dir / "card.md").exists()
    meta = read_meta(bundle_dir)
    assert (meta.version, meta.fingerprint) == (str(info.version), "fp-one")
    assert meta.onnx.enabled, meta.onnx.reason
    assert meta.parity.passed and meta.parity.rows_over == 0
    assert meta.parity.labels_identical and meta.parity.max_abs_diff <= meta.parity.tolerance
    assert load_bundle(bundle_dir).backend_name == "onnx"
    pointer = json.loads((spec.paths.bundles / "champion.json").read_text())
    assert pointer["bundle"] == str(bundle_dir) and pointer["version"] == str(info.version)
    assert pointed_bundle(spec) == bundle_dir
    # No half-built folders are left beside the bundle.
    assert_only_the_bundle_is_left(spec, bundle_dir)


def test_export_is_idempotent_and_follows_the_alias(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = train_holdout
    registry = default_registry(spec)
    first = register(registry, spec, train, holdout, fingerprint="fp-a", tmp_path=tmp_path)
    set_champion(registry, first.version, spec)
    bundle_dir = export_champion_bundle(spec, registry)
    written_at = (bundle_dir / "bundle.json").stat().st_mtime_ns

    assert export_champion_bundle(spec, registry) == bundle_dir
    assert (bundle_dir / "bundle.json").stat().st_mtime_ns == written_at  # reused, not rebuilt

    second = register(registry, spec, train, holdout, fingerprint="fp-b", tmp_path=tmp_path)
    set_champion(registry, second.version, spec)
    newer = export_champion_bundle(spec, registry)
    assert newer != bundle_dir and read_meta(newer).version == str(second.version)
    assert pointed_bundle(spec) == newer


def test_export_refuses_without_champion_or_holdout(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, _ = train_holdout
    registry = default_registry(spec)
    with pytest.raises(DeploymentError, match="alias 'champion'"):
        export_champion_bundle(spec, registry)

    info = register(registry, spec, train, None, fingerprint="fp-bare", tmp_path=tmp_path)
    set_champion(registry, info.version, spec)
    with pytest.raises(DeploymentError, match=HOLDOUT_ARTIFACT):
        export_champion_bundle(spec, registry)
    assert pointed_bundle(spec) is None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_seals_the_bundle_with_a_manifest_of_every_file(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = train_holdout
    registry = default_registry(spec)
    info = register(registry, spec, train, holdout, fingerprint="fp-m", tmp_path=tmp_path)
    set_champion(registry, info.version, spec)

    bundle_dir = export_champion_bundle(spec, registry)

    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    on_disk = sorted(p.name for p in bundle_dir.iterdir() if p.name != MANIFEST_FILE)
    # The model card (governance.card) ships sealed in the bundle with the model files.
    assert on_disk == ["bundle.json", "card.html", "card.md", ONNX_FILE, SKOPS_FILE]
    assert manifest == {
        "algorithm": "sha256",
        "files": {name: _sha256(bundle_dir / name) for name in on_disk},
    }
    verify_manifest(bundle_dir)


def test_a_model_file_from_another_version_is_caught_and_the_export_rebuilds(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """The issue's example: v1's model.onnx replaced by v2's. The manifest names the file,
    and the next export rebuilds v1 rather than serving v2's graph under v1's name."""
    train, holdout = train_holdout
    registry = default_registry(spec)
    first = register(registry, spec, train, holdout, fingerprint="fp-1", tmp_path=tmp_path)
    second = register(
        registry,
        spec,
        train.iloc[: len(train) // 2],
        holdout,
        fingerprint="fp-2",
        tmp_path=tmp_path,
    )
    set_champion(registry, second.version, spec)
    v2 = export_champion_bundle(spec, registry)
    set_champion(registry, first.version, spec)
    v1 = export_champion_bundle(spec, registry)
    original = _sha256(v1 / ONNX_FILE)
    assert original != _sha256(v2 / ONNX_FILE)

    shutil.copyfile(v2 / ONNX_FILE, v1 / ONNX_FILE)
    with pytest.raises(ManifestError, match=f"bundle file {ONNX_FILE} does not match"):
        verify_manifest(v1)

    assert export_champion_bundle(spec, registry) == v1
    verify_manifest(v1)
    assert _sha256(v1 / ONNX_FILE) == original
    assert read_meta(v1).version == str(first.version)


def test_a_half_written_bundle_folder_is_never_taken_for_complete(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """A folder under the final name missing a file (as an export killed mid-copy by an
    older version left it: bundle.json present) fails verification and is rebuilt whole."""
    train, holdout = train_holdout
    registry = default_registry(spec)
    info = register(registry, spec, train, holdout, fingerprint="fp-h", tmp_path=tmp_path)
    set_champion(registry, info.version, spec)
    bundle_dir = export_champion_bundle(spec, registry)
    (bundle_dir / SKOPS_FILE).unlink()
    with pytest.raises(ManifestError, match=f"missing: {SKOPS_FILE}"):
        verify_manifest(bundle_dir)

    assert export_champion_bundle(spec, registry) == bundle_dir
    verify_manifest(bundle_dir)
    assert load_bundle(bundle_dir, use_onnx=False).backend_name == "sklearn"
    assert_only_the_bundle_is_left(spec, bundle_dir)


def test_export_seals_the_bundle_the_artifact_gates_judged(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """The refit's artifact gates leave its bundle (no card yet) in `gated_bundle_dir`; the
    export seals that very bundle with the card instead of exporting the model again."""
    train, holdout = train_holdout
    registry = default_registry(spec)
    info = register(registry, spec, train, holdout, fingerprint="fp-gated", tmp_path=tmp_path)
    set_champion(registry, info.version, spec)
    gated = build_bundle(
        registry.load_model(info.version),
        spec,
        name=info.name,
        version=info.version,
        fingerprint="fp-gated",
        holdout=holdout,
        directory=gated_bundle_dir(spec, info.name, info.version),
    )
    gated_files = {p.name: p.read_bytes() for p in gated.iterdir()}
    assert "card.md" not in gated_files

    bundle_dir = export_champion_bundle(spec, registry)

    verify_manifest(bundle_dir)
    files = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    # The same graph, fallback and parity figures (created_at too): built once, not twice.
    for name in ("bundle.json", ONNX_FILE, SKOPS_FILE):
        assert files[name] == gated_files[name]
    assert read_meta(bundle_dir).parity.passed
    card = files["card.md"].decode()
    assert f"version {info.version}" in card
    assert "serves the ONNX graph" in card and "Not measured yet" not in card
    assert load_bundle(bundle_dir).backend_name == "onnx"
    assert_only_the_bundle_is_left(spec, bundle_dir)


def test_export_rebuilds_when_the_gated_bundle_is_not_this_versions(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """A gated bundle of other data (or altered since it was sealed) is never shipped."""
    train, holdout = train_holdout
    registry = default_registry(spec)
    info = register(registry, spec, train, holdout, fingerprint="fp-real", tmp_path=tmp_path)
    set_champion(registry, info.version, spec)
    build_bundle(
        registry.load_model(info.version),
        spec,
        name=info.name,
        version=info.version,
        fingerprint="fp-other",
        holdout=holdout,
        directory=gated_bundle_dir(spec, info.name, info.version),
    )

    bundle_dir = export_champion_bundle(spec, registry)

    assert read_meta(bundle_dir).fingerprint == "fp-real"
    verify_manifest(bundle_dir)
    assert_only_the_bundle_is_left(spec, bundle_dir)


def assert_only_the_bundle_is_left(spec: Spec, bundle_dir: Path) -> None:
    """No half-built or gated folder beside the exported bundle and its pointer."""
    names = sorted(p.name for p in spec.paths.bundles.iterdir())
    assert names == sorted(["champion.json", bundle_dir.name]), names
