"""The drift reference follows the champion: its training data, sketched once at promotion.

Saved as `references/<model>-v<version>.json` plus a `champion.json` pointer (replaced
atomically), so drift checks never reload the training set and always compare with the
data the serving model learned from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ct_platform.monitoring.drift import ReferenceProfile
from ct_platform.settings import Paths, Spec

POINTER = "champion.json"


@dataclass(frozen=True)
class ChampionReference:
    version: int
    profile: ReferenceProfile
    # The training set itself, for the full Evidently HTML report on a sample.
    train_path: Path
    # The champion's primary metric on its holdout: what live performance is held to.
    holdout_metric: float


def save_champion_reference(
    train_path: Path, version: int, holdout_metric: float, spec: Spec, paths: Paths
) -> Path:
    profile_path = paths.references / f"{spec.model.name}-v{version}.json"
    # Streamed: a long training history is sketched in bounded memory.
    ReferenceProfile.from_file(train_path, spec.dataset).save(profile_path)
    pointer = {
        "version": version,
        "profile": str(profile_path),
        "train": str(train_path),
        "holdout_metric": holdout_metric,
    }
    temporary = paths.references / f".{POINTER}.tmp"
    temporary.write_text(json.dumps(pointer))
    temporary.replace(paths.references / POINTER)
    return profile_path


def load_champion_reference(paths: Paths) -> ChampionReference | None:
    pointer_path = paths.references / POINTER
    if not pointer_path.exists():
        return None
    pointer = json.loads(pointer_path.read_text())
    profile = ReferenceProfile.load(Path(pointer["profile"]))
    return ChampionReference(
        pointer["version"], profile, Path(pointer["train"]), pointer["holdout_metric"]
    )
