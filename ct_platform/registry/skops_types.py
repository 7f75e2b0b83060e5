"""Safe model (de)serialisation with skops: an explicit allowlist, never pickle.

skops refuses to load any type it does not trust by default. Fitted tree models hold a
few scikit-learn internals it does not trust out of the box; we trust exactly those, by
name, and refuse everything else. The allowlist is checked against what skops finds in
the file itself, never against a list stored next to the model (a crafted model could
whitelist anything it likes there).

This module imports neither mlflow nor dagster, so serving can load `model.skops` with it.
"""

from __future__ import annotations

from pathlib import Path

import skops.io

# Found by dumping fitted estimators with skops 0.16 / scikit-learn 1.7 and listing
# `skops.io.get_untrusted_types`: HistGradientBoosting* (any loss) hold TreePredictor;
# DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*, AdaBoost* hold Tree.
# SimpleImputer (put before any estimator that cannot take NaN) keeps a numpy.dtype, which
# skops rebuilds from its name: data, not code. Linear models, SVMs and the other
# preprocessing steps need nothing extra. Anything else (e.g. KNeighbors' KDTree, MLP's
# optimiser) is refused until reviewed and added here. SpecPreparation is ours: the input
# preparation step of logged models, whose state is plain lists and dicts from the spec.
TRUSTED_TYPE_ALLOWLIST: frozenset[str] = frozenset(
    {
        "ct_platform.training.preparation.SpecPreparation",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)


class UntrustedModelError(ValueError):
    """A serialised model holds types outside `TRUSTED_TYPE_ALLOWLIST`."""


def _checked(untrusted: list[str]) -> list[str]:
    refused = sorted(set(untrusted) - TRUSTED_TYPE_ALLOWLIST)
    if refused:
        raise UntrustedModelError(
            f"model holds types outside the skops allowlist: {refused}; review them and add "
            "them to ct_platform.registry.skops_types.TRUSTED_TYPE_ALLOWLIST if they are safe"
        )
    return sorted(untrusted)


def dumps(model: object) -> bytes:
    """The model as skops bytes (its size is what the model-size gate measures)."""
    return skops.io.dumps(model)


def skops_trusted_types(model: object) -> list[str]:
    """The types skops needs trusted to load `model`; raises if any is not allowlisted."""
    return _checked(skops.io.get_untrusted_types(data=dumps(model)))


def save(model: object, path: Path) -> list[str]:
    """Write `model` to `path`; refuse (before writing) a model we could not load back."""
    data = dumps(model)
    trusted = _checked(skops.io.get_untrusted_types(data=data))
    path.write_bytes(data)
    return trusted


def load(path: Path) -> object:
    """Load a skops file, trusting only allowlisted types that the file actually holds."""
    trusted = _checked(skops.io.get_untrusted_types(file=path))
    return skops.io.load(path, trusted=trusted)
