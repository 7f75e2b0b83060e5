"""Does continuous training pay off? A prequential replay of the bank stream through the loop.

The dataset is replayed in time order (`ct simulate`'s own replay: `data.replay`) as batches
landing one after another in a fresh CT_HOME, with a fresh Dagster instance and MLflow store.
For each batch, test-then-train:

1. *test*: before the batch is ingested, it is scored by
   - the served champion: the bundle the `champion` alias was exported to, loaded and fed
     through the model server's own path (`serving.bundle`, the request schema), checked to
     be the version MLflow's `champion` alias names;
   - the platform's newest candidate, whatever its verdict (what serving would be without
     gates);
   - always-retrain: `training.fit.fit_pipeline` refitted on the whole window (the spec's
     `window_batches` newest batches, no holdout) before every batch;
   - never-retrain: the same fit on the first batch, kept for ever;
2. *train*: the real loop, ticked by this script instead of the daemon: the landing sensor
   is evaluated and each run it requests (`batch_job`, one partition) executes; then the
   training sensor is evaluated and the `training_job` it requests executes (both in this
   process, on the temp Dagster instance, with the code location's own jobs and resources).

Prints per batch and in total each policy's ROC AUC and log loss on the next batch, the
retrains, promotions and rejections, and whether a served champion ever had a failed
blocking gate (`ct.gates_passed`, `ct.gate.<name>` tags on its version).

    nice -n 10 .venv/bin/python benchmarks/ct/replay.py [--batch-rows 3000] [--max-batches N]
        [--spec ct_platform.yaml] [--json out.json] [--keep DIR]

Classification specs only (ROC AUC and log loss of the larger label). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    import dagster as dg
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo
    from ct_platform.settings import Spec

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("champion", "candidate", "always_retrain", "never_retrain")
POLICY_TITLES = {
    "champion": "served champion (platform)",
    "candidate": "newest candidate, ungated",  # the holdout fit, whatever its verdict
    "always_retrain": "always retrain, whole window",
    "never_retrain": "never retrain (first batch)",
}
# Dagster's console log (each event, and a stack trace for every gate rejection) would drown
# the table: the script prints each failure's step and message itself, and the full run logs
# stay in the Dagster instance (see --keep).
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
SETTLE_SECONDS = 2.1  # the landing sensor hands over files unchanged for 2 s
# A platform that refits a passing candidate on the whole window registers the refit as its
# own version with this tag (`training.refit`); earlier releases have no refit.
FIT_TAG, WHOLE_WINDOW = "ct.fit", "whole_window"


@dataclass
class Score:
    roc_auc: float
    log_loss: float


@dataclass
class BatchRecord:
    """One batch: the scores of each policy on it (before training), then what training did."""

    batch: int
    name: str
    rows: int
    positive_rate: float
    champion_version: int | None = None
    candidate_version: int | None = None
    scores: dict[str, Score | None] = field(default_factory=dict)
    ingest: str = ""
    trained_version: int | None = None
    verdict: str = ""
    champion_after: int | None = None
    # The champion re-scored on the new candidate's holdout, as model_evaluation reports it.
    champion_on_holdout: float | None = None
    train_seconds: float = 0.0


@dataclass
class Replay:
    """What the replay runs against: the temp project, its jobs and sensors, the registry."""

    spec: Spec
    defs: dg.Definitions
    instance: dg.DagsterInstance
    registry: ModelRegistry
    cursors: dict[str, str | None] = field(default_factory=dict)


def main() -> int:
    args = parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ct-replay-"))
    try:
        records, replay = run_replay(args, folder)
        summary = summarise(records, replay.spec, replay.registry)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print_summary(summary)
    if args.json:
        payload = {"options": vars(args), **summary, "per_batch": [asdict(r) for r in records]}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-rows", type=int, default=3000, help="rows per landed batch")
    parser.add_argument("--max-batches", type=int, help="stop after landing this many batches")
    parser.add_argument(
        "--spec",
        type=Path,
        default=Path(os.environ.get("CT_SPEC", REPO_ROOT / "ct_platform.yaml")),
        help="the spec to replay under (its landing folder is replaced by a temp one)",
    )
    parser.add_argument(
        "--source", type=Path, help="dataset file (default: the spec's dataset.source)"
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--keep", help="work in this (new) folder and keep it, for inspection")
    return parser.parse_args()


# --- the project and the loop ---------------------------------------------------------------


def prepare_project(spec_path: Path, folder: Path) -> Path:
    """A copy of the spec landing into `folder/incoming`; CT_HOME, DAGSTER_HOME under `folder`.

    Sets the process environment: the platform reads CT_HOME, DAGSTER_HOME and CT_SPEC at
    call time, and MLflow's store defaults to CT_HOME when MLFLOW_TRACKING_URI is unset.
    """
    raw = yaml.safe_load(spec_path.read_text())
    raw["dataset"]["landing_dir"] = str(folder / "incoming")
    (folder / "incoming").mkdir(parents=True)
    (folder / "dagster").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", folder / "dagster")
    copied = folder / "ct_platform.yaml"
    copied.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.environ.update(
        CT_SPEC=str(copied), CT_HOME=str(folder / "ct"), DAGSTER_HOME=str(folder / "dagster")
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return copied


def open_replay(spec_path: Path) -> Replay:
    import dagster as dg

    from ct_platform.definitions import build_definitions
    from ct_platform.deployment.export import default_registry
    from ct_platform.settings import load_spec

    spec = load_spec(spec_path)
    if spec.dataset.task != "classification":
        raise SystemExit("replay.py scores ROC AUC and log loss: classification specs only")
    return Replay(spec, build_definitions(spec), dg.DagsterInstance.get(), default_registry(spec))


def run_replay(args: argparse.Namespace, folder: Path) -> tuple[list[BatchRecord], Replay]:
    from ct_platform.data.replay import ReplayOptions, load_source, replay
    from ct_platform.settings import load_spec

    original = load_spec(args.spec)
    source = args.source.resolve() if args.source else original.source_file
    if source is None:
        raise SystemExit(
            f"no dataset file to replay: give --source, or dataset.source in {args.spec}"
        )
    project = open_replay(prepare_project(args.spec.resolve(), folder))
    spec = project.spec
    frame = load_source(source, spec)
    options = ReplayOptions(
        source=source,
        landing_dir=spec.landing_dir,
        state_path=spec.paths.state / "simulate.json",
        batch_size=args.batch_rows,
        interval=0,
        max_batches=1,
    )
    print(f"replaying {source.name}: {len(frame)} rows as {args.batch_rows}-row batches")
    print(f"work folder {folder}; window {spec.evaluation.window_batches} batches\n")
    print_header()
    records: list[BatchRecord] = []
    history: list[pd.DataFrame] = []
    baselines: dict[str, Pipeline] = {}
    stop = threading.Event()
    try:
        while args.max_batches is None or len(records) < args.max_batches:
            before = set(os.listdir(spec.landing_dir))
            if not replay(options, spec, stop, frame=frame, log=lambda _: None):
                break
            (name,) = set(os.listdir(spec.landing_dir)) - before
            batch = clean_batch(spec.landing_dir / name, spec)
            record = test_batch(project, len(records) + 1, name, batch, baselines)
            train_on_batch(project, record)
            print_row(record)
            records.append(record)
            history.append(batch)
            refit_baselines(history, baselines, spec)
    except KeyboardInterrupt:  # a slow box: Ctrl-C still reports the batches done
        print(f"\ninterrupted: the figures cover the {len(records)} batch(es) completed")
    return records, project


def clean_batch(path: Path, spec: Spec) -> pd.DataFrame:
    """The batch as the data contract cleans it (what ingestion stores and training reads)."""
    from ct_platform.data.contract import check_contract
    from ct_platform.data.reader import read_batch

    result = check_contract(read_batch(path, spec.dataset), spec.dataset)
    if result.clean is None:
        failed = "; ".join(rule.describe() for rule in result.failed)
        raise SystemExit(f"{path.name} fails the data contract, nothing to score: {failed}")
    return result.clean


def tick(project: Replay, sensor_name: str) -> list[dg.RunRequest]:
    """Evaluate one sensor as the daemon would; apply its partitions and keep its cursor."""
    import dagster as dg

    sensor = project.defs.resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(
        instance=project.instance,
        cursor=project.cursors.get(sensor_name),
        sensor_name=sensor_name,
        definitions=project.defs,
    )
    result = sensor(context)
    project.cursors[sensor_name] = result.cursor
    for request in result.dynamic_partitions_requests or []:
        project.instance.add_dynamic_partitions(
            request.partitions_def_name, list(request.partition_keys)
        )
    return list(result.run_requests or [])


def execute(project: Replay, job_name: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = project.defs.resolve_job_def(job_name)
    return job.execute_in_process(
        run_config=QUIET_RUN,
        instance=project.instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )


def train_on_batch(project: Replay, record: BatchRecord) -> None:
    """Land -> landing sensor -> batch_job(s) -> training sensor -> training_job."""
    newest_before = newest_version(project.registry)
    time.sleep(SETTLE_SECONDS)
    started = time.perf_counter()
    ingests = [execute(project, "batch_job", r) for r in tick(project, "landing_sensor")]
    record.ingest = "; ".join(
        "ok" if result.success else f"FAILED: {failure_text(result)}" for result in ingests
    )
    if not ingests:
        record.ingest = "no batch_job requested by the landing sensor"
    training = tick(project, "training_sensor")
    if not training:
        record.verdict = "no training run requested by the training sensor"
    for request in training:
        result = execute(project, "training_job", request)
        record.verdict = training_verdict(project, record, result, newest_before)
        record.champion_on_holdout = champion_on_holdout(result, project.spec)
    record.train_seconds = time.perf_counter() - started
    record.champion_after = champion_version(project.registry)


def training_verdict(
    project: Replay, record: BatchRecord, result: Any, newest_before: int | None
) -> str:
    """promoted / rejected (failed gates) / no new model / FAILED (a platform error).

    Sets `record.trained_version` to the version the gates judged (the holdout fit).
    """
    from ct_platform.training.promotion import GATES_PASSED_TAG

    created = [v for v in project.registry.versions() if v.version > (newest_before or 0)]
    if not created:
        return "no new model" if result.success else f"FAILED: {failure_text(result)}"
    judged = ([v for v in created if not is_refit(v)] or created)[-1]
    record.trained_version = judged.version
    verdict = judged.tags.get(GATES_PASSED_TAG)
    if champion_version(project.registry) in {v.version for v in created}:
        return "promoted" if result.success else f"promoted, then {failure_text(result)}"
    if verdict == "false":
        rejected = f"rejected: {', '.join(failed_gates(judged.tags)) or '?'}"
        # A rejection fails the run with the gates' dg.Failure; any other error is a bug.
        rejections = [e for e in result.get_step_failure_events() if is_rejection(e)]
        return rejected if rejections else f"{rejected}, then FAILED: {failure_text(result)}"
    if verdict == "true":
        return f"passed, not promoted: {failure_text(result) if not result.success else '?'}"
    return f"FAILED before a verdict: {failure_text(result)}"


def is_rejection(event: Any) -> bool:
    """A step failure raised by the gates (`dg.Failure`, with its description)."""
    user = event.step_failure_data.user_failure_data
    return user is not None and bool(user.description)


def failure_text(result: Any) -> str:
    """The first failed step and its message (a gate rejection's figures, or an error)."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        message = user.description if user and user.description else root_cause(data.error)
        return f"{event.step_key}: {' '.join((message or '').split())[:400]}"
    return "run failed without a failed step"


def root_cause(error: Any) -> str:
    """Dagster wraps a step's exception (e.g. in DagsterExecutionHandleOutputError): name the
    wrapper and the innermost cause, which says what actually went wrong."""
    innermost = error
    while innermost.cause is not None:
        innermost = innermost.cause
    if innermost is error:
        return error.message
    return f"{error.cls_name} <- {innermost.message}"


def champion_on_holdout(result: Any, spec: Spec) -> float | None:
    """The champion's primary metric on the candidate's holdout (model_evaluation metadata)."""
    key = f"champion/{spec.evaluation.primary_metric}"
    for materialization in result.asset_materializations_for_node("model_evaluation"):
        value = materialization.metadata.get(key)
        return None if value is None else float(value.value)
    return None


# --- scoring --------------------------------------------------------------------------------


def test_batch(
    project: Replay, number: int, name: str, batch: pd.DataFrame, baselines: dict[str, Pipeline]
) -> BatchRecord:
    """Score `batch` with every policy that has a model, before the platform sees it."""
    target = batch[project.spec.dataset.target].to_numpy()
    positive = max(np.unique(target).tolist())
    record = BatchRecord(number, name, len(batch), float(np.mean(target == positive)))
    record.champion_version = champion_version(project.registry)
    record.candidate_version = newest_candidate(project.registry)
    served = served_probabilities(project, record.champion_version, batch)
    record.scores["champion"] = None if served is None else score(target, positive, *served)
    record.scores["candidate"] = None
    if record.candidate_version is not None:
        model = project.registry.load_model(record.candidate_version)
        record.scores["candidate"] = score_pipeline(model, batch, project.spec, positive)
    for policy in ("always_retrain", "never_retrain"):
        model = baselines.get(policy)
        if model is not None:
            record.scores[policy] = score_pipeline(model, batch, project.spec, positive)
    return record


def served_probabilities(
    project: Replay, version: int | None, batch: pd.DataFrame
) -> tuple[np.ndarray, list[Any]] | None:
    """Probabilities from the champion's exported bundle, through the server's scoring path.

    Raises SystemExit when the exported bundle is not the version the alias names: the
    platform would be serving another model than its registry says (a platform bug).
    """
    from ct_platform.deployment.export import pointed_bundle
    from ct_platform.serving.bundle import load_bundle
    from ct_platform.serving.slots import ServedModel

    if version is None:
        return None
    bundle = pointed_bundle(project.spec)
    served = None if bundle is None else ServedModel.of(load_bundle(bundle))
    if served is None or served.version != str(version):
        shown = "no bundle" if served is None else f"bundle of version {served.version}"
        raise SystemExit(f"MLflow's champion is version {version}, but the export holds {shown}")
    # Rows as a JSON client sends them (missing values as null), parsed by the server schema.
    records = json.loads(batch[served.schema.names].to_json(orient="records"))
    prediction = served.model.predict(served.schema.from_records(records))
    return prediction.proba, list(served.model.meta.classes or [])


def score_pipeline(model: Pipeline, batch: pd.DataFrame, spec: Spec, positive: Any) -> Score:
    proba = model.predict_proba(batch[spec.dataset.feature_columns])
    return score(batch[spec.dataset.target].to_numpy(), positive, proba, list(model.classes_))


def score(target: np.ndarray, positive: Any, proba: np.ndarray, classes: list[Any]) -> Score:
    """ROC AUC and log loss of the positive label's probability (NaN: one class only)."""
    from sklearn.metrics import log_loss, roc_auc_score

    column = np.clip(np.asarray(proba, dtype=float)[:, classes.index(positive)], 1e-15, 1 - 1e-15)
    truth = (target == positive).astype(int)
    if truth.min() == truth.max():
        return Score(float("nan"), float("nan"))
    return Score(float(roc_auc_score(truth, column)), float(log_loss(truth, column)))


def refit_baselines(
    history: list[pd.DataFrame], baselines: dict[str, Pipeline], spec: Spec
) -> None:
    """Always-retrain: the whole window, every batch. Never-retrain: the first batch only."""
    import pandas as pd

    from ct_platform.training.fit import fit_pipeline

    window = pd.concat(history[-spec.evaluation.window_batches :], ignore_index=True)
    baselines["always_retrain"] = fit_pipeline(window, spec)
    baselines.setdefault("never_retrain", baselines["always_retrain"])


# --- the registry ---------------------------------------------------------------------------


def champion_version(registry: ModelRegistry) -> int | None:
    from ct_platform.registry.versions import CHAMPION

    info = registry.alias_version(CHAMPION)
    return None if info is None else info.version


def newest_candidate(registry: ModelRegistry) -> int | None:
    """The newest version fitted for the gates to judge (not a whole-window refit)."""
    candidates = [v.version for v in registry.versions() if not is_refit(v)]
    return candidates[-1] if candidates else None


def is_refit(version: ModelVersionInfo) -> bool:
    """A whole-window refit of a candidate that passed (`training.refit`, where it exists)."""
    return version.tags.get(FIT_TAG) == WHOLE_WINDOW


def newest_version(registry: ModelRegistry) -> int | None:
    versions = registry.versions()
    return versions[-1].version if versions else None


def failed_gates(tags: dict[str, str]) -> list[str]:
    return sorted(
        k.removeprefix("ct.gate.")
        for k, v in tags.items()
        if k.startswith("ct.gate.") and v == "fail"
    )


def blocking_failures(tags: dict[str, str], spec: Spec) -> list[str]:
    """A version's failed gates that block (per the spec), plus a verdict that is not 'true'."""
    from ct_platform.training.promotion import GATES_PASSED_TAG

    failed = [
        gate
        for gate in failed_gates(tags)
        if getattr(getattr(spec.gates, gate, None), "blocking", True)
    ]
    if tags.get(GATES_PASSED_TAG) != "true":
        failed.append(f"{GATES_PASSED_TAG}={tags.get(GATES_PASSED_TAG)!r}")
    return failed


# --- the report -----------------------------------------------------------------------------


def summarise(records: list[BatchRecord], spec: Spec, registry: ModelRegistry) -> dict[str, Any]:
    """Mean and median per policy over the batches the served champion scored, and counts."""
    served = [r for r in records if r.scores.get("champion") is not None]
    policies: dict[str, dict[str, float]] = {}
    for policy in POLICIES:
        scores = [r.scores[policy] for r in served if r.scores.get(policy) is not None]
        policies[policy] = figures(scores)
    always = policies["always_retrain"]
    for values in policies.values():
        values["auc_ratio_vs_always"] = ratio(values.get("auc_mean"), always.get("auc_mean"))
        values["log_loss_ratio_vs_always"] = ratio(
            values.get("log_loss_mean"), always.get("log_loss_mean")
        )
    champions = sorted({r.champion_version for r in served if r.champion_version is not None})
    violations = {
        v: failures
        for v in champions
        if (failures := blocking_failures(registry.version(v).tags, spec))
    }
    floor = spec.gates.metric_floor.threshold
    return {
        "batches": len(records),
        "scored_by_champion": len(served),
        "policies": policies,
        "champion_beats_or_ties_always": sum(
            r.scores["champion"].roc_auc >= r.scores["always_retrain"].roc_auc
            for r in served
            if r.scores.get("always_retrain") is not None
        ),
        "retrains": sum(r.trained_version is not None for r in records),
        "promotions": sum(r.verdict.startswith("promoted") for r in records),
        "rejections": [
            f"batch {r.batch}: {r.verdict}" for r in records if r.verdict.startswith("rejected")
        ],
        "platform_errors": [
            f"batch {r.batch}: {text}"
            for r in records
            for text in (r.ingest, r.verdict)
            if "FAILED" in text or text.startswith(("no ", "promoted, then", "passed, not"))
        ],
        "served_champions": champions,
        "served_champion_blocking_failures": violations,
        "champion_under_floor_on_new_holdout": [
            f"batch {r.batch}: champion {r.champion_on_holdout:.4f} < floor {floor}"
            for r in records
            if r.champion_on_holdout is not None and r.champion_on_holdout < floor
        ],
        "median_train_seconds": statistics.median(r.train_seconds for r in records)
        if records
        else 0,
    }


def figures(scores: list[Score]) -> dict[str, float]:
    aucs = [s.roc_auc for s in scores if not np.isnan(s.roc_auc)]
    losses = [s.log_loss for s in scores if not np.isnan(s.log_loss)]
    if not aucs:
        return {"batches": 0}
    return {
        "batches": len(aucs),
        "auc_mean": statistics.fmean(aucs),
        "auc_median": statistics.median(aucs),
        "log_loss_mean": statistics.fmean(losses),
        "log_loss_median": statistics.median(losses),
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def print_header() -> None:
    columns = "  ".join(f"{p[:9]:>9}" for p in POLICIES)
    print(
        f"{'batch':>5} {'rows':>5} {'pos%':>5} {'champ':>5}  ROC AUC: {columns}   log loss: "
        f"{columns}   {'train s':>7}  trained -> verdict"
    )
    sys.stdout.flush()


def print_row(record: BatchRecord) -> None:
    def cell(policy: str, metric: str) -> str:
        value = record.scores.get(policy)
        return f"{getattr(value, metric):9.4f}" if value is not None else f"{'-':>9}"

    aucs = "  ".join(cell(p, "roc_auc") for p in POLICIES)
    losses = "  ".join(cell(p, "log_loss") for p in POLICIES)
    champion = "-" if record.champion_version is None else f"v{record.champion_version}"
    trained = "-" if record.trained_version is None else f"v{record.trained_version}"
    print(
        f"{record.batch:>5} {record.rows:>5} {record.positive_rate:5.1%} {champion:>5}  "
        f"ROC AUC: {aucs}   log loss: {losses}   {record.train_seconds:7.1f}  {trained} -> "
        f"{record.verdict}" + ("" if record.ingest == "ok" else f" [ingest: {record.ingest}]")
    )
    sys.stdout.flush()


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\n{summary['batches']} batches; the served champion scored "
        f"{summary['scored_by_champion']} of them (the figures below are over those)"
    )
    print(
        f"{'policy':<32} {'AUC mean':>9} {'median':>7} {'vs always':>9}   "
        f"{'log loss mean':>13} {'median':>7} {'vs always':>9}"
    )
    for policy, values in summary["policies"].items():
        if not values.get("batches"):
            print(f"{POLICY_TITLES[policy]:<32} (no scored batch)")
            continue
        print(
            f"{POLICY_TITLES[policy]:<32} {values['auc_mean']:9.4f} {values['auc_median']:7.4f} "
            f"{values['auc_ratio_vs_always']:9.3f}   {values['log_loss_mean']:13.4f} "
            f"{values['log_loss_median']:7.4f} {values['log_loss_ratio_vs_always']:9.3f}"
        )
    print(
        f"champion ROC AUC >= always-retrain's on {summary['champion_beats_or_ties_always']} "
        f"of {summary['scored_by_champion']} batches"
    )
    print(
        f"retrains {summary['retrains']}, promotions {summary['promotions']}, "
        f"median loop time per batch {summary['median_train_seconds']:.1f} s"
    )
    for line in summary["rejections"]:
        print(f"  {line}")
    print(
        f"served champions: {summary['served_champions']}; with a failed blocking gate: "
        f"{summary['served_champion_blocking_failures'] or 'none'}"
    )
    for line in summary["champion_under_floor_on_new_holdout"]:
        print(f"  kept serving under the floor on the newest holdout: {line}")
    for line in summary["platform_errors"]:
        print(f"  PLATFORM: {line}")
    always = summary["policies"]["always_retrain"].get("auc_mean")
    champion = summary["policies"]["champion"].get("auc_mean")
    met = (
        champion is not None
        and always is not None
        and champion >= always
        and not summary["served_champion_blocking_failures"]
    )
    print(
        f"goal (champion mean ROC AUC >= always-retrain's, no served champion failed a "
        f"blocking gate): {'MET' if met else 'NOT MET'}"
    )


if __name__ == "__main__":
    # Library internals (numpy and scikit-learn inside the Evidently reports of tiny
    # windows, Dagster's beta notices): not the benchmark's figures, and they bury the table.
    warnings.filterwarnings("ignore", module="numpy|evidently|sklearn|dagster")
    sys.exit(main())
