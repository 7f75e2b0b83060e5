"""Export the MLflow champion as a serving bundle under `$CT_HOME/bundles/`.

The holdout convention: the training step logs the cleaned holdout frame it evaluated on
(feature columns + target, as `data.contract` cleans them) as the Parquet artifact
`holdout.parquet` at the root of the version's MLflow run. The export re-runs the ONNX
parity check on exactly those rows, so a bundle is checked on data the model never saw.

Bundles are immutable and named `<model>-v<version>`: exporting a version twice reuses
the first bundle, if its `manifest.json` still verifies (SHA-256 of every file) and it was
built for this version and fingerprint; otherwise it is rebuilt. `build_bundle` writes a
bundle in a hidden temp folder, manifest last, and renames it into place, so a folder with
the final name is always complete. `<alias>.json` next to the bundles points at the bundle
currently holding the alias (replaced atomically).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ct_platform.deployment.endpoint import DeploymentError, utc_now
from ct_platform.deployment.state import read_json, write_json_atomic
from ct_platform.registry.versions import CHAMPION, SEMVER_TAG
from ct_platform.serving.bundle import BundleError, BundleMeta, read_meta
from ct_platform.serving.manifest import ManifestError, verify_manifest
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry, ModelVersionInfo

HOLDOUT_ARTIFACT = "holdout.parquet"
logger = logging.getLogger(__name__)


def export_champion_bundle(
    spec: Spec, registry: ModelRegistry | None = None, *, alias: str = CHAMPION
) -> Path:
    """Write (or reuse) the bundle of the version holding `alias`; point `<alias>.json` at it."""
    registry = registry or default_registry(spec)
    info = registry.alias_version(alias)
    if info is None:
        raise DeploymentError(f"no version of model '{registry.model_name}' has alias '{alias}'")
    bundles = spec.paths.bundles
    bundle_dir = bundles / f"{info.name}-v{info.version}"
    if not _is_complete(bundle_dir, info):
        _build(spec, registry, info, bundle_dir)
    write_json_atomic(
        bundles / f"{alias}.json",
        {
            "alias": alias,
            "name": info.name,
            "version": str(info.version),
            "run_id": info.run_id,
            "fingerprint": info.fingerprint,
            "bundle": str(bundle_dir),
            "updated_at": utc_now(),
        },
    )
    return bundle_dir


def pointed_bundle(spec: Spec, alias: str = CHAMPION) -> Path | None:
    """The bundle `<alias>.json` points at, if the pointer and the bundle both exist."""
    pointer = read_json(spec.paths.bundles / f"{alias}.json")
    if pointer is None:
        return None
    bundle_dir = Path(pointer["bundle"])
    return bundle_dir if (bundle_dir / "bundle.json").exists() else None


def default_registry(spec: Spec) -> ModelRegistry:
    # Imported on use: mlflow is slow to import and the deployment targets never need it.
    from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri

    return ModelRegistry(
        default_tracking_uri(), model_name=spec.model.name, experiment=spec.dataset.name
    )


def load_holdout(registry: ModelRegistry, run_id: str) -> pd.DataFrame:
    """The holdout frame the training run logged as `holdout.parquet`."""
    with tempfile.TemporaryDirectory(prefix="ct-holdout-") as folder:
        try:
            local = registry.download_artifact(run_id, HOLDOUT_ARTIFACT, Path(folder))
        except Exception as exc:  # MlflowException or OSError, depending on the store
            raise DeploymentError(
                f"run {run_id} has no '{HOLDOUT_ARTIFACT}' artifact, needed for the ONNX "
                f"parity check: {exc}"
            ) from None
        return pd.read_parquet(local)


def _is_complete(bundle_dir: Path, info: ModelVersionInfo) -> bool:
    """The folder holds this version's bundle, every file as it was written."""
    if not bundle_dir.exists():
        return False
    try:
        verify_manifest(bundle_dir)
        meta = read_meta(bundle_dir)
    except (BundleError, ManifestError) as error:
        logger.warning("rebuilding bundle %s: %s", bundle_dir, error)
        return False
    if (meta.version, meta.fingerprint) != (str(info.version), _fingerprint(info)):
        logger.warning(
            "rebuilding bundle %s: it holds version %s (fingerprint %s), not %s (%s)",
            bundle_dir,
            meta.version,
            meta.fingerprint,
            info.version,
            _fingerprint(info),
        )
        return False
    return True


def _build(spec: Spec, registry: ModelRegistry, info: ModelVersionInfo, bundle_dir: Path) -> None:
    from ct_platform.governance.card import write_card
    from ct_platform.training.bundling import build_bundle, gated_bundle_dir, seal_with_attachments

    def card(meta: BundleMeta) -> dict[str, bytes]:
        # The model card, with the bundle's parity figures, ships inside the bundle.
        return write_card(registry, info.version, spec, bundle=meta)

    # The bundle the refit's artifact gates judged, if it is still there and intact.
    gated = gated_bundle_dir(spec, info.name, info.version)
    if gated.exists() and _is_complete(gated, info):
        seal_with_attachments(gated, bundle_dir, card)
        return
    build_bundle(
        registry.load_model(info.version),
        spec,
        name=info.name,
        version=info.version,
        fingerprint=_fingerprint(info),
        holdout=load_holdout(registry, info.run_id),
        directory=bundle_dir,
        attachments=card,
        semver=info.tags.get(SEMVER_TAG),
    )
    shutil.rmtree(gated, ignore_errors=True)  # not this version's bundle as built: stale


def _fingerprint(info: ModelVersionInfo) -> str:
    return info.fingerprint or f"run:{info.run_id}"
