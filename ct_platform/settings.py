"""The project spec: one YAML file that says everything dataset-specific.

`load_spec()` reads `ct_platform.yaml` (or the file named by `CT_SPEC`) into typed settings.
A wrong spec fails here, at load, with an error naming the key and what was expected, so no
run gets halfway before discovering a typo. Relative paths in the spec are resolved against
the spec file's own folder, so a spec and its data can live anywhere.

Run-time state goes under `CT_HOME` (default `.ct/` in the working directory): see `Paths`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_SPEC_FILE = "ct_platform.yaml"
DEFAULT_CT_HOME = ".ct"

Task = Literal["classification", "regression"]
ColumnType = Literal["int", "float", "category"]
ClassificationMetric = Literal["accuracy", "balanced_accuracy", "roc_auc", "f1"]
RegressionMetric = Literal["mae", "rmse", "r2"]
# Metrics where a smaller value is better; everything else is "higher is better".
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


class SpecError(ValueError):
    """The spec file is missing, unreadable or invalid. The message names the key."""


class _Strict(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them rather than ignore them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    type: ColumnType
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    # Values that mean "unknown" (e.g. pdays=999): read as missing, never as numbers.
    sentinels: list[float | str] = Field(default_factory=list)
    nullable: bool = True

    @model_validator(mode="after")
    def _check_kind(self) -> ColumnSpec:
        if self.type == "category" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric columns, not to type 'category'")
        if self.type != "category" and self.categories is not None:
            raise ValueError("categories apply to type 'category' only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type != "category"


class DatasetSpec(_Strict):
    name: str
    landing_dir: Path = Path("data/incoming")
    separator: str = ","
    target: str
    task: Task
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    # Columns present in the files but never used as features (leaks, ids, free text).
    drop_columns: list[str] = Field(default_factory=list)
    time_column: str | None = None
    sensitive_column: str | None = None
    completeness_min: Annotated[float, Field(ge=0, le=1)] = 0.95
    duplicate_rate_max: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_rows: Annotated[int, Field(ge=1)] = 50
    # A target column of a classification task must hold these labels only.
    target_labels: list[int | str] | None = None

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetSpec:
        if self.target in self.columns:
            raise ValueError(f"target '{self.target}' must not also be listed in columns")
        overlap = set(self.drop_columns) & set(self.columns)
        if overlap:
            raise ValueError(f"columns both kept and dropped: {sorted(overlap)}")
        for key in ("time_column", "sensitive_column"):
            name = getattr(self, key)
            if name is not None and name not in self.columns:
                raise ValueError(f"{key} '{name}' is not one of the declared columns")
        return self

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs, in spec order (the time column is bookkeeping, not a feature)."""
        return [c for c in self.columns if c != self.time_column]

    @property
    def numeric_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c in self.feature_columns if not self.columns[c].is_numeric]


class ModelSpec(_Strict):
    name: str
    # Dotted path of a scikit-learn estimator; only `sklearn.` paths are accepted, so a spec
    # can never make the platform import arbitrary code.
    estimator: str
    params: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_estimator(self) -> ModelSpec:
        if not self.estimator.startswith("sklearn.") or self.estimator.count(".") < 2:
            raise ValueError(
                f"estimator '{self.estimator}' must be a scikit-learn class path such as "
                "'sklearn.ensemble.HistGradientBoostingClassifier'"
            )
        return self


class EvaluationSpec(_Strict):
    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    primary_metric: ClassificationMetric | RegressionMetric = "roc_auc"
    # How many of the newest valid batches make the training set.
    window_batches: Annotated[int, Field(ge=1)] = 10


class Gate(_Strict):
    blocking: bool = True


class ContractGate(Gate):
    pass


class MetricFloorGate(Gate):
    threshold: float


class ChampionRegressionGate(Gate):
    # How much worse than the champion (in the primary metric's units) a candidate may be.
    tolerance: Annotated[float, Field(ge=0)] = 0.01


class LatencyGate(Gate):
    max_ms: Annotated[float, Field(gt=0)] = 10.0


class ModelSizeGate(Gate):
    max_mb: Annotated[float, Field(gt=0)] = 100.0


class ParityGate(Gate):
    tolerance: Annotated[float, Field(gt=0)] = 1e-4


class GatesSpec(_Strict):
    contract: ContractGate = ContractGate()
    metric_floor: MetricFloorGate
    champion_regression: ChampionRegressionGate = ChampionRegressionGate()
    latency: LatencyGate = LatencyGate(blocking=False)
    model_size: ModelSizeGate = ModelSizeGate()
    parity: ParityGate = ParityGate()


SERVING_PORT_ENV = "CT_SERVING_PORT"


class ServingSpec(_Strict):
    target: Literal["local", "docker"] = "local"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    # Names of environment variables, never the secrets themselves.
    api_key_env: str = "CT_API_KEY"
    admin_token_env: str = "CT_ADMIN_TOKEN"
    docker_image: str = "ct-platform-serving:latest"

    @model_validator(mode="before")
    @classmethod
    def _port_from_environment(cls, data: object) -> object:
        """`CT_SERVING_PORT`, when set, overrides `serving.port` (another port, same spec)."""
        override = os.environ.get(SERVING_PORT_ENV, "").strip()
        if not override or not isinstance(data, dict):
            return data
        if not override.isdigit() or not 1 <= int(override) <= 65535:
            raise ValueError(f"{SERVING_PORT_ENV}={override!r} is not a port number (1-65535)")
        return {**data, "port": int(override)}


class DriftWindow(_Strict):
    rows: Annotated[int, Field(ge=1)] | None = 5000
    minutes: Annotated[float, Field(gt=0)] | None = None


class GovernorSpec(_Strict):
    cooldown_minutes: Annotated[float, Field(ge=0)] = 30
    max_retrains_per_day: Annotated[int, Field(ge=1)] = 6
    # After a candidate fails to beat the champion, wait this long before trying again.
    backoff_minutes: Annotated[float, Field(ge=0)] = 120
    alert_webhook_env: str | None = None


class MonitoringSpec(_Strict):
    window: DriftWindow = DriftWindow()
    drift_share_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    decay_tolerance: Annotated[float, Field(ge=0)] = 0.05
    min_feedback_rows: Annotated[int, Field(ge=1)] = 200
    # Fewer logged rows than this give no drift verdict: too little to compare.
    min_window_rows: Annotated[int, Field(ge=1)] = 200
    # A drift- or decay-triggered retrain trains on only the newest N valid batches, so the
    # model adapts to the new regime instead of averaging it away with older data.
    retrain_window_batches: Annotated[int, Field(ge=1)] = 3
    cron: str = "*/5 * * * *"
    governor: GovernorSpec = GovernorSpec()


class Spec(_Strict):
    dataset: DatasetSpec
    model: ModelSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    gates: GatesSpec
    # A factory, not a shared instance: the default reads CT_SERVING_PORT when a spec loads.
    serving: ServingSpec = Field(default_factory=ServingSpec)
    monitoring: MonitoringSpec = MonitoringSpec()
    # Set by `load_spec`: the folder relative paths in the spec are resolved against.
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _check_metric_fits_task(self) -> Spec:
        regression = {"mae", "rmse", "r2"}
        metric = self.evaluation.primary_metric
        if (self.dataset.task == "regression") != (metric in regression):
            raise ValueError(
                f"evaluation.primary_metric '{metric}' does not fit task '{self.dataset.task}'"
            )
        return self

    @property
    def landing_dir(self) -> Path:
        return (self.base_dir / self.dataset.landing_dir).resolve()

    @property
    def paths(self) -> Paths:
        return Paths.from_env()


@dataclass(frozen=True)
class Paths:
    """Every place the platform writes at run time, all under one root (`CT_HOME`)."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get("CT_HOME", DEFAULT_CT_HOME)).resolve())

    def _dir(self, name: str) -> Path:
        path = self.home / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def quarantine(self) -> Path:
        return self._dir("quarantine")

    @cached_property
    def validated(self) -> Path:
        """Batches that passed the contract, as typed Parquet (one file per batch)."""
        return self._dir("validated")

    @cached_property
    def datasets(self) -> Path:
        """Training sets (train + holdout Parquet) keyed by their data fingerprint."""
        return self._dir("datasets")

    @cached_property
    def reports(self) -> Path:
        return self._dir("reports")

    @cached_property
    def mlflow(self) -> Path:
        return self._dir("mlflow")

    @cached_property
    def bundles(self) -> Path:
        return self._dir("bundles")

    @cached_property
    def predictions(self) -> Path:
        return self._dir("predictions")

    @cached_property
    def feedback(self) -> Path:
        return self._dir("feedback")

    @cached_property
    def deployments(self) -> Path:
        return self._dir("deployments")

    @cached_property
    def references(self) -> Path:
        """Drift reference profiles of champions' training data."""
        return self._dir("references")

    @cached_property
    def state(self) -> Path:
        """Small JSON state files (e.g. the retrain governor's ledger)."""
        return self._dir("state")


def spec_path() -> Path:
    return Path(os.environ.get("CT_SPEC", DEFAULT_SPEC_FILE)).resolve()


def load_spec(path: str | Path | None = None) -> Spec:
    """Read and validate the spec; raise `SpecError` naming the offending key."""
    path = Path(path).resolve() if path is not None else spec_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path} (set CT_SPEC to point elsewhere)") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Spec.model_validate({**raw, "base_dir": path.parent})
    except ValidationError as exc:
        raise SpecError(f"{path}: invalid spec:\n{_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {key}: {error['msg']}")
    return "\n".join(lines)
