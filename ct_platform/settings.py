"""The project spec: one YAML file that says everything dataset-specific.

`load_spec()` reads the file named by `CT_SPEC`, else the nearest `ct_platform.yaml` in the
working folder or its parents (`spec_path`), into typed settings.
A wrong spec fails here, at load, with an error naming the key and what was expected, so no
run gets halfway before discovering a typo. Relative paths in the spec are resolved against
the spec file's own folder, so a spec and its data can live anywhere.

Run-time state goes under `CT_HOME` (default `.ct/` beside the spec found above the working
folder, else in the working folder): see `Paths`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ct_platform.atomic import write_atomically

DEFAULT_SPEC_FILE = "ct_platform.yaml"
DEFAULT_CT_HOME = ".ct"

Task = Literal["classification", "regression"]
ColumnType = Literal["int", "float", "category", "date", "datetime"]
TEMPORAL_TYPES = frozenset({"date", "datetime"})
DEFAULT_LANDING_DIR = Path("data/incoming")
ClassificationMetric = Literal["accuracy", "balanced_accuracy", "roc_auc", "f1"]
RegressionMetric = Literal["mae", "rmse", "r2"]
# Metrics where a smaller value is better; everything else is "higher is better".
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


class SpecError(ValueError):
    """The spec file is missing, unreadable or invalid. The message names the key."""


class _Strict(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them rather than ignore them.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_bounds(low: float | None, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"min ({low}) is greater than max ({high})")


class ColumnSpec(_Strict):
    type: ColumnType
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    # Values that mean "unknown" (e.g. pdays=999): read as missing, never as numbers.
    sentinels: list[float | str] = Field(default_factory=list)
    nullable: bool = True
    # strftime pattern of a date/datetime column as written in the files, e.g. "%d/%m/%y".
    format: str | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> ColumnSpec:
        if not self.is_numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max apply to numeric columns, not to type '{self.type}'")
        if self.type != "category" and self.categories is not None:
            raise ValueError("categories apply to type 'category' only")
        if self.is_temporal and (self.format is None or "%" not in self.format):
            raise ValueError(
                f"type '{self.type}' needs a strftime `format` (e.g. \"%d/%m/%y\"): day-first "
                "and month-first dates cannot be told apart from the values"
            )
        if not self.is_temporal and self.format is not None:
            raise ValueError("format applies to types 'date' and 'datetime' only")
        if self.is_temporal and self.sentinels:
            raise ValueError(f"sentinels do not apply to type '{self.type}': leave the field empty")
        _check_bounds(self.min, self.max)
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type in ("int", "float")

    @property
    def is_temporal(self) -> bool:
        return self.type in TEMPORAL_TYPES


class TargetRules(_Strict):
    """Bounds on a regression target (e.g. `min: 0` for a count), checked like a column's."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check_order(self) -> TargetRules:
        _check_bounds(self.min, self.max)
        return self


class DatasetSpec(_Strict):
    name: str
    landing_dir: Path = DEFAULT_LANDING_DIR
    # The file `ct simulate` (and so `make demo`) replays into landing_dir; relative to the spec.
    source: Path | None = None
    # One character: field counts are checked per row before parsing (see data/reader.py).
    separator: Annotated[str, Field(min_length=1, max_length=1)] = ","
    target: str
    task: Task
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    # Columns present in the files but never used as features (leaks, ids, free text).
    drop_columns: list[str] = Field(default_factory=list)
    time_column: str | None = None
    # Columns the fairness gate judges groups by (one or a list; both keys are accepted).
    sensitive_column: str | None = None
    sensitive_columns: list[str] = Field(default_factory=list)
    completeness_min: Annotated[float, Field(ge=0, le=1)] = 0.95
    duplicate_rate_max: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_rows: Annotated[int, Field(ge=1)] = 50
    # A target column of a classification task must hold these labels only.
    target_labels: list[int | str] | None = None
    # A regression target's range, e.g. {min: 0} for a count.
    target_rules: TargetRules | None = None

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetSpec:
        if self.target in self.columns:
            raise ValueError(
                f"target '{self.target}' must not also be listed in columns (give its range "
                "with dataset.target_rules, its labels with dataset.target_labels)"
            )
        dropped = set(self.drop_columns)
        if len(dropped) != len(self.drop_columns):
            raise ValueError(f"drop_columns lists a name twice: {self.drop_columns}")
        if self.target in dropped:
            raise ValueError(f"drop_columns lists the target '{self.target}'")
        overlap = dropped & set(self.columns)
        if overlap:
            raise ValueError(f"columns both kept and dropped: {sorted(overlap)}")
        for key in ("time_column", "sensitive_column"):
            name = getattr(self, key)
            if name is not None and name not in self.columns:
                raise ValueError(f"{key} '{name}' is not one of the declared columns")
        unknown = [name for name in self.sensitive_columns if name not in self.columns]
        if unknown:
            raise ValueError(f"sensitive_columns {unknown} are not declared columns")
        self._check_time_columns()
        self._check_target_constraints()
        return self

    def _check_time_columns(self) -> None:
        # Text sorts "31/01/11" after "01/02/11": ordering by a category column puts the
        # wrong rows in the holdout, so the time column must be parsed.
        if self.time_column is not None and self.columns[self.time_column].type == "category":
            raise ValueError(
                f"time_column '{self.time_column}' is type 'category', which sorts as text; "
                "declare it {type: date, format: ...} (or datetime, int, float)"
            )
        # A date is not a model input: the platform derives no features from it.
        for name, column in self.columns.items():
            if column.is_temporal and name != self.time_column:
                raise ValueError(
                    f"column '{name}' is type '{column.type}' but is not the time_column: date "
                    "columns are never model features; make it the time_column, list it "
                    "under drop_columns, or derive numeric features from it upstream"
                )

    def _check_target_constraints(self) -> None:
        if self.task == "classification" and self.target_rules is not None:
            raise ValueError("target_rules (min/max) apply to regression; use target_labels")
        if self.task == "regression" and self.target_labels is not None:
            raise ValueError("target_labels apply to classification; use target_rules")

    @property
    def sensitive(self) -> list[str]:
        """`sensitive_column` and `sensitive_columns` together, each once, in spec order."""
        named = [self.sensitive_column] if self.sensitive_column else []
        return list(dict.fromkeys([*named, *self.sensitive_columns]))

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs, in spec order (the time column is bookkeeping, not a feature)."""
        return [c for c in self.columns if c != self.time_column]

    @property
    def numeric_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].type == "category"]


class ModelSpec(_Strict):
    name: str
    # Dotted path of a scikit-learn estimator; only `sklearn.` paths are accepted, so a spec
    # can never make the platform import arbitrary code.
    estimator: str
    params: dict[str, object] = Field(default_factory=dict)
    # Free text for the model card: what the model is for, and what it must not be used for.
    intended_use: str | None = None
    limitations: str | None = None

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
    # When the champion is under the floor too (same holdout), a better candidate passes it
    # (with an alert). False: an absolute floor, whatever the champion scores.
    symmetric: bool = True


PromotionPolicy = Literal["non_inferiority", "superiority"]


# `gates.champion_regression.tolerance` when unset: metric units on a 0..1 scale, else
# relative to the champion's figure.
DEFAULT_MARGIN = 0.01
DEFAULT_RELATIVE_MARGIN = 0.01


class ChampionRegressionGate(Gate):
    """Candidate vs champion on the same holdout, by a paired test (`training.comparison`).

    `non_inferiority`: the candidate passes unless the worse bound of the (1 - alpha)
    confidence interval of its improvement is below -tolerance (the margin, in the primary
    metric's units). `superiority`: it passes only when that bound is above 0.
    """

    # Unset: 0.01 for metrics on a 0..1 scale, 1 % of the champion's figure for mae and rmse
    # (metrics in the target's units). A number given applies as is, in the metric's units.
    tolerance: Annotated[float, Field(ge=0)] | None = None
    policy: PromotionPolicy = "non_inferiority"
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05

    def margin(self, metric: str, champion: float) -> float:
        """The non-inferiority margin in `metric`'s units against a champion at `champion`."""
        if self.tolerance is not None:
            return self.tolerance
        if metric in LOWER_IS_BETTER:
            return DEFAULT_RELATIVE_MARGIN * abs(champion)
        return DEFAULT_MARGIN


class BaselineGate(Gate):
    """Candidate vs the naive baseline (scikit-learn's `DummyRegressor` / `DummyClassifier`
    fitted on the same training rows, scored on the same holdout; `training.baseline`).

    The candidate passes only when it is significantly better: the worse bound of the
    (1 - alpha) confidence interval of its improvement, by the paired test the champion
    comparison uses (`training.comparison`), is above 0. `enabled: false` records the
    baseline's figures without judging.
    """

    enabled: bool = True
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05


class LatencyGate(Gate):
    """Deprecated spelling of `resources.max_latency_ms` (and its `blocking`)."""

    max_ms: Annotated[float, Field(gt=0)] = 10.0


class ResourceGate(Gate):
    """The serving bundle measured in a fresh process (`training.latency`): single-row p50
    latency, 1,000-row request p50 latency (unset: recorded, not judged) and peak RSS."""

    max_latency_ms: Annotated[float, Field(gt=0)] = 100.0
    max_batch_latency_ms: Annotated[float, Field(gt=0)] | None = None
    max_memory_mb: Annotated[float, Field(gt=0)] = 2048.0


class ModelSizeGate(Gate):
    max_mb: Annotated[float, Field(gt=0)] = 100.0


# Default parity tolerances (see `ParityGate.tolerances` for the reasoning).
PARITY_ABSOLUTE_DEFAULT = 1e-4
PARITY_RELATIVE_DEFAULT = {"classification": 0.0, "regression": 1e-5}


class ParityGate(Gate):
    """ONNX graph vs sklearn on the holdout, value by value as `numpy.isclose`:
    `|onnx - sklearn| <= tolerance + relative_tolerance * |sklearn|`. Keys left unset take
    the task's defaults (`tolerances`)."""

    tolerance: Annotated[float, Field(ge=0)] | None = None
    relative_tolerance: Annotated[float, Field(ge=0)] | None = None

    def tolerances(self, task: Task, output_scale: float) -> tuple[float, float]:
        """(absolute, relative) tolerance; `output_scale` is the largest |sklearn output|.

        Classification compares probabilities in [0, 1], where float32 rounding leaves
        ~1e-7: 1e-4 absolute is generous and a relative term would only loosen it near 1.
        Regression values carry the target's units. float32 keeps 24 bits (1.2e-7 relative)
        and the graph sums tree leaves (or weighted features) onto a base value in float32,
        so its error scales with the magnitudes summed, not with each result: values in the
        hundreds differ by ~3e-4, and a prediction near zero from a base in the hundreds by
        as much. Measured gaps stay under 5e-6 of the output scale (HGB and linear models,
        outputs 1e2..1e6). So regression defaults to 1e-5 relative, and to an absolute
        term of the relative tolerance x the output scale (at least 1e-4); a wrong graph is
        off by orders of magnitude more.
        """
        relative = PARITY_RELATIVE_DEFAULT[task]
        if self.relative_tolerance is not None:
            relative = self.relative_tolerance
        if self.tolerance is not None:
            return self.tolerance, relative
        if task == "regression":
            return max(PARITY_ABSOLUTE_DEFAULT, relative * output_scale), relative
        return PARITY_ABSOLUTE_DEFAULT, relative


class FairnessGate(Gate):
    """Group fairness of the candidate on its holdout, per sensitive column (fairlearn).

    Warning by default: which gap is acceptable, and for which attribute, is the team's call
    for its use case; a team that has made it sets `blocking: true`. 0.1 is the common
    rule-of-thumb bound for demographic parity and equalized odds differences (rates in
    [0, 1]). `min_group_rows` 100: a rate measured on 100 rows has a standard error up to 0.05
    (p = 0.5), so a gap of 0.1 between two such groups is about what noise alone can give;
    smaller groups are reported, not judged.
    """

    blocking: bool = False
    # Largest allowed demographic parity and equalized odds difference (rate units).
    threshold: Annotated[float, Field(ge=0)] = 0.1
    # Largest allowed gap in the primary metric between groups, in the metric's units
    # (unset: `threshold`, for metrics on a 0..1 scale; a spec judging mae or rmse across
    # groups must set it, in the target's units, or it is refused at load).
    metric_gap: Annotated[float, Field(ge=0)] | None = None
    min_group_rows: Annotated[int, Field(ge=1)] = 100

    @property
    def metric_gap_threshold(self) -> float:
        return self.threshold if self.metric_gap is None else self.metric_gap


class SecretsGate(Gate):
    """detect-secrets over the spec's values, the model's parameters and the bundle's files."""


class PiiGate(Gate):
    """Personal data (emails, phone numbers, IBANs, Luhn-valid card numbers) in the text and
    category columns of the training set."""

    # Rows sampled per column (seeded); the distinct values of the sample are scanned.
    sample_rows: Annotated[int, Field(ge=1)] = 10_000
    # A column fails when more than this share of its sampled values holds an entity:
    # 0 means any one value does (a single card number is already personal data).
    max_share: Annotated[float, Field(ge=0, lt=1)] = 0.0


class VulnerabilitiesGate(Gate):
    """Known-vulnerable distributions installed in the serving environment.

    Warning by default: a fix means a lock update and a new image, a human decision.
    """

    blocking: bool = False
    # An OSV JSON file (a list of OSV records, or {"vulns": [...]}) read offline; relative
    # to the spec file.
    advisory_file: Path | None = None
    # Also ask PyPI's advisory data through pip-audit (network; "unknown" when unreachable).
    pypi: bool = True
    timeout_seconds: Annotated[float, Field(gt=0)] = 15.0


class SecurityGates(_Strict):
    secrets: SecretsGate = SecretsGate()
    pii: PiiGate = PiiGate()
    vulnerabilities: VulnerabilitiesGate = VulnerabilitiesGate()


class GatesSpec(_Strict):
    contract: ContractGate = ContractGate()
    metric_floor: MetricFloorGate
    champion_regression: ChampionRegressionGate = ChampionRegressionGate()
    baseline: BaselineGate = BaselineGate()
    resources: ResourceGate = ResourceGate()
    model_size: ModelSizeGate = ModelSizeGate()
    parity: ParityGate = ParityGate()
    fairness: FairnessGate = FairnessGate()
    security: SecurityGates = SecurityGates()

    def gate(self, name: str) -> Gate:
        """The settings of gate `name`: top-level, under `security`, or `parity` for the
        refit's `onnx_parity` check."""
        if name in SecurityGates.model_fields:
            return getattr(self.security, name)
        return getattr(self, "parity" if name == "onnx_parity" else name)

    @model_validator(mode="before")
    @classmethod
    def _fold_latency(cls, raw: object) -> object:
        """Older specs' `latency: {max_ms, blocking}` is read as `resources` with that
        single-row limit (and that blocking)."""
        if not isinstance(raw, dict) or "latency" not in raw:
            return raw
        if raw.get("resources") is not None:
            raise ValueError(
                "gates.latency is folded into gates.resources: give its limit as "
                "gates.resources.max_latency_ms and drop gates.latency"
            )
        rest = {key: value for key, value in raw.items() if key != "latency"}
        latency = LatencyGate.model_validate(raw["latency"] or {})
        resources = {"max_latency_ms": latency.max_ms, "blocking": latency.blocking}
        return {**rest, "resources": resources}


SERVING_PORT_ENV = "CT_SERVING_PORT"
# Where a deployment (compose, Kubernetes) runs its own model server: the environment says it,
# the dataset's spec stays the same (deploy/compose.yaml sets both).
SERVING_TARGET_ENV = "CT_SERVING_TARGET"
SERVING_ENDPOINT_URL_ENV = "CT_SERVING_ENDPOINT_URL"


class ServingSpec(_Strict):
    # local: a server process of ours; docker: a container of ours; endpoint: a running
    # server someone else runs (compose's model-server) at `endpoint_url`, only hot-swapped.
    target: Literal["local", "docker", "endpoint"] = "local"
    endpoint_url: str | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    # Names of environment variables, never the secrets themselves.
    api_key_env: str = "CT_API_KEY"
    admin_token_env: str = "CT_ADMIN_TOKEN"
    docker_image: str = "ct-platform-serving:latest"
    # A request value outside the data contract (`dataset.columns`: min, max, categories,
    # nullable): `reject` answers 422 naming it; `score` scores it. Counted in /metrics.
    out_of_contract: Literal["reject", "score"] = "reject"
    # A request column the model does not have (a near-duplicate of one, "Age" for "age",
    # is always refused): `ignore` scores without it and says so (header x-ignored-columns,
    # counted in /metrics and /admin/stats), as MLflow does; `refuse` answers 400 naming it.
    unknown_columns: Literal["ignore", "refuse"] = "ignore"
    # Seconds a request body may take in all, from the end of its headers (408 after):
    # the gap timeout alone lets a byte every 59 s hold a connection for ever.
    body_time_limit_s: Annotated[float, Field(gt=0)] = 60.0
    # Connections held at once; a request beyond is answered 503 (GET/HEAD and /admin/ are
    # exempt: a busy server still answers /ping and takes a hot swap).
    max_connections: Annotated[int, Field(ge=2)] = 512
    # A live server whose /ping stays silent this long is hung, and a deploy restarts it: a
    # loaded box (or a server busy at its cap) may answer late, and a restart drops what it
    # holds. (The watchdog asks for the repair after one silent 2 s probe.)
    hung_after_s: Annotated[float, Field(gt=0)] = 10.0
    # Intra-op threads of the ONNX session that scores requests of 512 rows or more (at
    # most the cores the server may use); 1: one thread a run for every request (on two
    # cores, a request of 512 rows or more is two runs at once, one per half of its rows).
    # More cut a big request's scoring but take cores from the single-row requests meanwhile.
    batch_threads: Annotated[int, Field(ge=1, le=64)] = 1

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

    @model_validator(mode="before")
    @classmethod
    def _endpoint_from_environment(cls, data: object) -> object:
        """`CT_SERVING_TARGET` / `CT_SERVING_ENDPOINT_URL`, when set, override the spec's."""
        if not isinstance(data, dict):
            return data
        overrides = {
            key: os.environ[name].strip()
            for key, name in (
                ("target", SERVING_TARGET_ENV),
                ("endpoint_url", SERVING_ENDPOINT_URL_ENV),
            )
            if os.environ.get(name, "").strip()
        }
        return {**data, **overrides}

    @model_validator(mode="after")
    def _endpoint_has_url(self) -> ServingSpec:
        if self.target == "endpoint" and not self.endpoint_url:
            raise ValueError(
                "serving.target 'endpoint' needs serving.endpoint_url (or "
                f"${SERVING_ENDPOINT_URL_ENV}): the URL of the running model server"
            )
        return self


class DriftWindow(_Strict):
    rows: Annotated[int, Field(ge=1)] | None = 5000
    minutes: Annotated[float, Field(gt=0)] | None = None


class GovernorSpec(_Strict):
    cooldown_minutes: Annotated[float, Field(ge=0)] = 30
    max_retrains_per_day: Annotated[int, Field(ge=1)] = 6
    # After a candidate fails to beat the champion, wait this long before trying again.
    backoff_minutes: Annotated[float, Field(ge=0)] = 120
    alert_webhook_env: str | None = None


# `monitoring.decay_tolerance` when unset: metric units on a 0..1 scale, else relative.
DEFAULT_DECAY_TOLERANCE = 0.05
DEFAULT_RELATIVE_DECAY = 0.05


class MonitoringSpec(_Strict):
    window: DriftWindow = DriftWindow()
    drift_share_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    # Decay worth a retrain: how much worse than the holdout figure the live primary metric
    # may be. Unset: 0.05 in the metric's own units for metrics on a 0..1 scale (accuracy,
    # balanced_accuracy, f1, roc_auc, r2), and 5 % of the holdout figure for metrics in the
    # target's units (mae, rmse). A number given applies as is, in the metric's units.
    decay_tolerance: Annotated[float, Field(ge=0)] | None = None
    # A shortfall beyond the tolerance is decay only when a one-sided test at this level
    # says it is beyond noise (`monitoring.performance`): the check runs every few minutes
    # on overlapping windows, so a loose level would retrain on noise.
    decay_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    # Fewer labelled rows than this give no performance verdict ("insufficient data").
    min_feedback_rows: Annotated[int, Field(ge=1)] = 200
    # Classification: fewer labelled rows than this in any class present (or a single class)
    # give no verdict. ROC AUC's standard error with 30 rows in the rarer class is about
    # 0.07 (Hanley & McNeil, AUC 0.8): less than that is noise next to `decay_tolerance`.
    min_feedback_per_class: Annotated[int, Field(ge=1)] = 30
    # Fewer rows in the drift window than this give no drift verdict: too little to compare.
    min_window_rows: Annotated[int, Field(ge=1)] = 200
    # A column with fewer non-missing values than this (in the window or the reference) is
    # not tested, and says so. Distances from small samples are noise: between two samples
    # of one distribution, the normalised Wasserstein distance is about 0.8/sqrt(n), 0.08 at
    # n = 100, already close to the 0.1 drift threshold.
    min_column_values: Annotated[int, Field(ge=1)] = 100
    # A column whose current values break the dataset contract (not numbers, outside
    # min/max, unknown categories) in more than this share of rows gets no drift verdict,
    # only the violation: what drift would measure there is the breakage, reported as such.
    max_invalid_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    # A drift- or decay-triggered retrain trains on only the newest N valid batches, so the
    # model adapts to the new regime instead of averaging it away with older data.
    retrain_window_batches: Annotated[int, Field(ge=1)] = 3
    cron: str = "*/5 * * * *"
    governor: GovernorSpec = GovernorSpec()

    def decay_margin(self, metric: str, reference: float) -> float:
        """`decay_tolerance` in `metric`'s units for a holdout figure of `reference`."""
        if self.decay_tolerance is not None:
            return self.decay_tolerance
        if metric in LOWER_IS_BETTER:
            return DEFAULT_RELATIVE_DECAY * abs(reference)
        return DEFAULT_DECAY_TOLERANCE


Strategy = Literal["direct", "blue_green", "canary", "shadow", "ab"]


class AnalysisSpec(_Strict):
    """Live checks of a rollout, run every `interval_seconds` on the traffic of that period
    (Flagger's `analysis`, Argo Rollouts' `AnalysisTemplate`)."""

    interval_seconds: Annotated[float, Field(gt=0)] = 60
    # Failed analyses tolerated before the rollback (Flagger `threshold`, Argo
    # `failureLimit`): 0 rolls back at the first failed check.
    failure_limit: Annotated[int, Field(ge=0)] = 0
    # Fewer candidate requests than this in a period give no verdict: the step waits.
    min_requests: Annotated[int, Field(ge=1)] = 100
    error_rate_max: Annotated[float, Field(ge=0, le=1)] = 0.01
    p99_latency_ms_max: Annotated[float, Field(gt=0)] = 250
    # A p99 over `p99_latency_ms_max` fails only when the candidate is slower than stable
    # in the same period: its share of requests over the limit exceeds stable's by this much
    # (absolute) and a one-sided Fisher's exact test at `latency_alpha` says the excess is
    # beyond noise. Both slots share one server process and its CPU: a loaded box slows both.
    # With stable under `min_requests` in the period (a canary's 100 % step), the reference
    # is stable in the rollout's latest earlier period holding `min_requests` of its answers
    # (the same margin and test); with no such period, the limit alone decides.
    latency_slow_share_excess_max: Annotated[float, Field(ge=0, le=1)] = 0.01
    latency_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.001
    # Shift between the two slots' predicted-score distributions over the same period.
    score_shift_metric: Literal["psi", "jensen_shannon"] = "psi"
    score_shift_max: Annotated[float, Field(gt=0)] = 0.2
    # A shift over `score_shift_max` fails only when a permutation test at the period's
    # counts finds it significant at this level: at 100 vs 400 requests a model compared
    # with itself has PSI over 0.2 about one period in five by chance. At most this share of
    # a good candidate's analyses fail on the score shift.
    score_shift_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.001
    # Requests refused as the client's fault (4xx) are judged against stable's refusals of
    # the same period's traffic, never against `error_rate_max`: the candidate's refusal
    # rate may exceed stable's by this much (absolute) before it fails, and only when a
    # one-sided Fisher's exact test at `refusal_alpha` says the excess is beyond noise.
    refusal_rate_excess_max: Annotated[float, Field(ge=0, le=1)] = 0.01
    refusal_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.001
    # Routing is sticky per `X-Routing-Key`: a failure on refusals, p99 or score shift that
    # passes with at most this many of the keys weighing most on it left out (from both
    # slots) is those clients' doing, not the candidate's (0: no client is ever excused).
    # Each group of them is one more run of the check (2**n - 1 groups at most): hence 6.
    excused_clients_max: Annotated[int, Field(ge=0, le=6)] = 3
    # With labels from /feedback: the candidate's accuracy may trail stable's by this much
    # (accuracy points) for classification; for regression its mean absolute error may
    # exceed stable's by this fraction of it (0.05: 5 %).
    metric_tolerance: Annotated[float, Field(ge=0)] = 0.05
    min_labelled: Annotated[int, Field(ge=1)] = 100


class CanarySpec(_Strict):
    # Candidate traffic share per step, in percent; the last must be 100.
    steps: list[Annotated[float, Field(gt=0, le=100)]] = [20, 40, 60, 80, 100]

    @model_validator(mode="after")
    def _ends_at_full_traffic(self) -> CanarySpec:
        if not self.steps or self.steps[-1] != 100 or self.steps != sorted(self.steps):
            raise ValueError(f"deployment.canary.steps must rise to 100, got {self.steps}")
        return self


class BlueGreenSpec(_Strict):
    # After the switch the old version stays loaded for an instant rollback this long.
    rollback_window_seconds: Annotated[float, Field(ge=0)] = 600


class ShadowSpec(_Strict):
    # The comparison ends at whichever comes first (the candidate answers no client).
    requests: Annotated[int, Field(ge=1)] = 1000
    duration_seconds: Annotated[float, Field(gt=0)] = 1800
    # Share of rows where the candidate predicts the stable label (classification).
    min_agreement: Annotated[float, Field(ge=0, le=1)] = 0.9


class AbSpec(_Strict):
    # Candidate share of traffic, sticky by request key (`X-Routing-Key`, else request id).
    split: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # The test on labelled feedback is fixed by the task: a correct prediction per request
    # (two proportions, z test) for classification, the absolute error (Welch's t) for
    # regression; both run on the server's running sums (`deployment.analysis`).
    baseline_rate: Annotated[float, Field(gt=0, lt=1)] = 0.85
    # Smallest difference worth detecting: in accuracy points for classification (0.05 over
    # `baseline_rate`), a fraction of stable's mean absolute error for regression (0.05: a
    # 5 % change of it), like `analysis.metric_tolerance`.
    minimum_effect: Annotated[float, Field(gt=0)] = 0.05
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    max_duration_seconds: Annotated[float, Field(gt=0)] = 7 * 24 * 3600


class DeploymentSpec(_Strict):
    """How a new champion reaches traffic; `direct` swaps it in for everyone at once."""

    strategy: Strategy = "direct"
    analysis: AnalysisSpec = AnalysisSpec()
    canary: CanarySpec = CanarySpec()
    blue_green: BlueGreenSpec = BlueGreenSpec()
    shadow: ShadowSpec = ShadowSpec()
    ab: AbSpec = AbSpec()


class GovernanceSpec(_Strict):
    # "required": a candidate that passed its gates waits for a person (`ct approve`, or the
    # `approve_candidate` job) before it may become champion. "none": it is promoted at once.
    approval: Literal["required", "none"] = "none"


class Spec(_Strict):
    dataset: DatasetSpec
    model: ModelSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    gates: GatesSpec
    # A factory, not a shared instance: the default reads CT_SERVING_PORT when a spec loads.
    serving: ServingSpec = Field(default_factory=ServingSpec)
    monitoring: MonitoringSpec = MonitoringSpec()
    deployment: DeploymentSpec = DeploymentSpec()

    governance: GovernanceSpec = GovernanceSpec()
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

    @model_validator(mode="after")
    def _check_metric_units(self) -> Spec:
        """Settings in the primary metric's units must mean something for it: a figure a
        metric on a 0..1 scale can never reach, a fraction given where seconds were meant,
        or a default in rate units judging errors in the target's units is refused."""
        why = _metric_unit_problem(self)
        if why is not None:
            raise ValueError(why)
        return self

    @property
    def landing_dir(self) -> Path:
        return (self.base_dir / self.dataset.landing_dir).resolve()

    @property
    def source_file(self) -> Path | None:
        """The dataset file to replay (`dataset.source`, absolute), or None when not given."""
        source = self.dataset.source
        return None if source is None else (self.base_dir / source).resolve()

    @property
    def paths(self) -> Paths:
        return Paths.from_env()


def _metric_unit_problem(spec: Spec) -> str | None:
    """What is wrong with the spec's metric-unit settings for its task and metric, or None."""
    metric, task = spec.evaluation.primary_metric, spec.dataset.task
    gates, monitoring, deployment = spec.gates, spec.monitoring, spec.deployment
    where = f"for task {task} with primary_metric {metric}"
    if metric not in LOWER_IS_BETTER:  # a 0..1 scale (r2: at most 1)
        unreachable = {
            "gates.metric_floor.threshold": (gates.metric_floor.threshold, 0.7),
            "gates.champion_regression.tolerance": (gates.champion_regression.tolerance, 0.01),
            "gates.fairness.metric_gap": (gates.fairness.metric_gap, 0.1),
            "monitoring.decay_tolerance": (monitoring.decay_tolerance, 0.05),
        }
        for key, (value, sensible) in unreachable.items():
            if value is not None and value > 1:
                return (
                    f"{key}: {value:g} is in {metric}'s units, which run to 1 at most {where}; "
                    f"give a figure on that scale, e.g. {sensible:g}"
                )
    if task != "regression":
        return None
    # For regression these are fractions of stable's mean absolute error.
    fractions = {
        "deployment.ab.minimum_effect": deployment.ab.minimum_effect,
        "deployment.analysis.metric_tolerance": deployment.analysis.metric_tolerance,
    }
    for key, value in fractions.items():
        if value >= 1:
            return (
                f"{key}: {value:g} {where} is a fraction of stable's mean absolute error "
                f"({value:.0%} of it here), not a figure in the target's units; e.g. 0.05"
            )
    if metric in LOWER_IS_BETTER and spec.dataset.sensitive and gates.fairness.metric_gap is None:
        return (
            f"gates.fairness.metric_gap is unset {where}: the gap between groups' {metric} is "
            f"in the target's units, and the fallback gates.fairness.threshold "
            f"({gates.fairness.threshold:g}) is a rate; set it in the target's units, e.g. "
            f"a tenth of the {metric} you expect"
        )
    return None


# Under CT_HOME: which platform (spec model name) the state there belongs to.
PLATFORM_RECORD = "platform.json"


@dataclass(frozen=True)
class Paths:
    """Every place the platform writes at run time, all under one root (`CT_HOME`)."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        """`CT_HOME` when set; else `.ct/` beside the spec found above the working folder
        (so `ct history` from a project's subfolder reads the project's home, not an empty
        one), or in the working folder when `CT_SPEC` names the spec or none is found."""
        if "CT_HOME" in os.environ:
            return cls(Path(os.environ["CT_HOME"]).resolve())
        project = Path.cwd()
        if not os.environ.get("CT_SPEC"):
            with contextlib.suppress(SpecError):  # no project above: the working folder
                project = spec_path().parent
        return cls((project / DEFAULT_CT_HOME).resolve())

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
    def rollouts(self) -> Path:
        """Rollout state (`current.json`) and every finished rollout's record."""
        return self._dir("rollouts")

    @cached_property
    def references(self) -> Path:
        """Drift reference profiles of champions' training data."""
        return self._dir("references")

    @cached_property
    def state(self) -> Path:
        """Small JSON state files (e.g. the retrain governor's ledger)."""
        return self._dir("state")

    @property
    def platform_record(self) -> Path:
        """`{"model": "<spec model name>"}`: whose state this CT_HOME holds, so a `ct`
        command with another platform's spec refuses it (`cli.where.check_home`)."""
        return self.home / PLATFORM_RECORD

    def claim(self, model: str) -> None:
        """Record `model` as the platform of this CT_HOME, unless one is recorded already."""
        if not self.platform_record.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            write_atomically(self.platform_record, json.dumps({"model": model}) + "\n")

    def recorded_model(self) -> str | None:
        """The model `claim` recorded; None before the first step ran on this CT_HOME.
        Raises `SpecError` naming the file when it is not such a record."""
        try:
            return str(json.loads(self.platform_record.read_text())["model"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SpecError(
                f'{self.platform_record} is not a platform record {{"model": "<name>"}}: {error!r}'
            ) from None


def spec_path() -> Path:
    """The spec file every entry point reads (each `ct` command, the code location).

    `CT_SPEC` when set (a relative path is taken from the working folder); else the nearest
    `ct_platform.yaml` in the working folder or one of its parents, as git finds its
    repository. Raises `SpecError` naming what was looked for and where.
    """
    named = os.environ.get("CT_SPEC")
    if named:
        path = Path(named).resolve()
        if not path.is_file():
            raise SpecError(f"spec file not found: CT_SPEC={named} names {path}, not a file")
        return path
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_SPEC_FILE).is_file():
            return folder / DEFAULT_SPEC_FILE
    raise SpecError(
        f"spec file not found: CT_SPEC is not set and there is no {DEFAULT_SPEC_FILE} in "
        f"{here} or any folder above it (set CT_SPEC to the spec file, or run inside the "
        "project)"
    )


def load_spec(path: str | Path | None = None) -> Spec:
    """Read and validate the spec; raise `SpecError` naming the offending key."""
    path = Path(path).resolve() if path is not None else spec_path()
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path} (set CT_SPEC to point elsewhere)") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = Spec.model_validate({**raw, "base_dir": path.parent})
    except ValidationError as exc:
        raise SpecError(f"{path}: invalid spec:\n{_describe(exc)}") from None
    _prepare_landing_dir(spec, path)
    return spec


def _prepare_landing_dir(spec: Spec, path: Path) -> None:
    """A landing folder the spec names must exist: a typo would otherwise watch nothing.

    The default folder (`data/incoming` beside the spec) is created instead, so a fresh
    checkout runs without a manual step.
    """
    folder = spec.landing_dir
    if folder.is_dir():
        return
    if folder.exists():
        raise SpecError(f"{path}: dataset.landing_dir: {folder} exists but is not a folder")
    if spec.dataset.landing_dir != DEFAULT_LANDING_DIR:
        raise SpecError(
            f"{path}: dataset.landing_dir: folder {folder} does not exist (create it, or fix "
            f"the path; relative paths are resolved against {path.parent})"
        )
    folder.mkdir(parents=True, exist_ok=True)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {key}: {error['msg']}")
    return "\n".join(lines)
