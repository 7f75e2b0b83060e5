"""Export the champion from a real MLflow store (SQLite under the test's CT_HOME)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.deployment import DeploymentError, export_champion_bundle, pointed_bundle
from ct_platform.deployment.export import HOLDOUT_ARTIFACT, default_registry
from ct_platform.serving.bundle import load_bundle, read_meta
from ct_platform.settings import Spec
from ct_platform_tests.deployment.conftest import register


def test_export_writes_a_checked_bundle_and_points_champion_at_it(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = train_holdout
    registry = default_registry(spec)
    info = register(registry, spec, train, holdout, fingerprint="fp-one", tmp_path=tmp_path)
    registry.set_alias("champion", info.version)

    bundle_dir = export_champion_bundle(spec, registry)

    assert bundle_dir == spec.paths.bundles / f"{spec.model.name}-v{info.version}"
    meta = read_meta(bundle_dir)
    assert (meta.version, meta.fingerprint) == (str(info.version), "fp-one")
    assert meta.onnx.enabled, meta.onnx.reason
    assert meta.parity.labels_identical and meta.parity.max_abs_diff <= meta.parity.tolerance
    assert load_bundle(bundle_dir).backend_name == "onnx"
    pointer = json.loads((spec.paths.bundles / "champion.json").read_text())
    assert pointer["bundle"] == str(bundle_dir) and pointer["version"] == str(info.version)
    assert pointed_bundle(spec) == bundle_dir
    # No half-built folders are left beside the bundle.
    assert sorted(p.name for p in spec.paths.bundles.iterdir()) == sorted(
        ["champion.json", bundle_dir.name]
    )


def test_export_is_idempotent_and_follows_the_alias(
    spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = train_holdout
    registry = default_registry(spec)
    first = register(registry, spec, train, holdout, fingerprint="fp-a", tmp_path=tmp_path)
    registry.set_alias("champion", first.version)
    bundle_dir = export_champion_bundle(spec, registry)
    written_at = (bundle_dir / "bundle.json").stat().st_mtime_ns

    assert export_champion_bundle(spec, registry) == bundle_dir
    assert (bundle_dir / "bundle.json").stat().st_mtime_ns == written_at  # reused, not rebuilt

    second = register(registry, spec, train, holdout, fingerprint="fp-b", tmp_path=tmp_path)
    registry.set_alias("champion", second.version)
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
    registry.set_alias("champion", info.version)
    with pytest.raises(DeploymentError, match=HOLDOUT_ARTIFACT):
        export_champion_bundle(spec, registry)
    assert pointed_bundle(spec) is None
