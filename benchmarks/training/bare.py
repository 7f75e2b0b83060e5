"""Bare training baseline: the work of `training_job`, hand-wired, without Dagster or MLflow.

A first training run on a fresh project, step for step as the job does it, calling the same
domain functions (so only orchestration and tracking differ):

- ingest: every landed file through the data contract into typed Parquet (`ingest_batch`);
- training_dataset: the newest window, split train/holdout, saved (`build_window`), and its
  `pii` check (presidio);
- candidate_model: the holdout fit, stored with skops (MLflow stores it the same way);
- model_evaluation: the holdout scores and gates (metric floor, champion comparison, fairness,
  secrets, PII) and the per-group figures;
- refit_model: the whole-window refit, stored with skops, its artifact gates (model size of
  the stored file, resources in a fresh process, ONNX parity) on its bundle, built without
  the card;
- evaluation_reports: the two Evidently HTML reports; model_card: the holdout fit's card;
- champion: the drift reference of the whole window;
- model_bundle: that bundle sealed with its card inside (no second ONNX export), and its
  checks `bundle_secrets` (detect-secrets) and `vulnerabilities` (pip-audit).

What it leaves out is what the platform adds on top: Dagster (code location, run, events,
step outputs) and MLflow (runs, params, metrics, the registered model, its signature and
input example, artifacts). Prints one JSON object: seconds per phase, with the absolute
time (`time.time()`) imports were done, so the caller can time the import phase itself.

    CT_HOME=... .venv/bin/python benchmarks/training/bare.py spec.yaml
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

IMPORT_STARTED = time.time()

# Everything the job's steps import, imported up front (the job imports them in its steps).
import pandas as pd  # noqa: E402

from ct_platform.data.ingest import ingest_batch  # noqa: E402
from ct_platform.governance.card import CardFacts, DataWindow, GateLine, card_files  # noqa: E402
from ct_platform.monitoring.champion_reference import save_champion_reference  # noqa: E402
from ct_platform.monitoring.evidently_reports import (  # noqa: E402
    data_drift_report,
    model_quality_report,
)
from ct_platform.registry import skops_types  # noqa: E402
from ct_platform.serving.bundle import read_meta  # noqa: E402
from ct_platform.settings import Paths, Spec, load_spec  # noqa: E402
from ct_platform.training.bundling import (  # noqa: E402
    build_bundle,
    gated_bundle_dir,
    seal_with_attachments,
)
from ct_platform.training.datasets import TrainingSetRef, save_window  # noqa: E402
from ct_platform.training.evaluate import score_by_group  # noqa: E402
from ct_platform.training.evaluation_reports import _scored  # noqa: E402
from ct_platform.training.fit import fit_pipeline  # noqa: E402
from ct_platform.training.gates import (  # noqa: E402
    GateResult,
    model_size_gate,
    onnx_parity_gate,
    resources_gate,
)
from ct_platform.training.promotion import Contender, evaluate_candidate  # noqa: E402
from ct_platform.training.security import (  # noqa: E402
    bundle_secrets_gate,
    training_set_pii_gate,
    vulnerabilities_gate,
)
from ct_platform.training.window import build_window  # noqa: E402

IMPORTED = time.time()
T = TypeVar("T")


class Phases:
    """Seconds per named phase, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = work()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return result


def judged(gates: tuple[GateResult, ...]) -> tuple[GateResult, ...]:
    """`gates`, or SystemExit naming the failed blocking ones (the job fails there too)."""
    failed = [f"{g.name}: {g.description}" for g in gates if g.blocking and not g.passed]
    if failed:
        raise SystemExit("rejected by blocking gate(s):\n" + "\n".join(failed))
    return gates


def ingest(spec: Spec, paths: Paths) -> list[str]:
    """Every landed file, in landing (name) order, through the data contract."""
    keys = sorted(path.name for path in spec.landing_dir.iterdir() if path.is_file())
    outcomes = [ingest_batch(key, spec, paths) for key in keys]
    return [outcome.key for outcome in outcomes if outcome.passed]


def store(model: object, folder: Path, name: str) -> None:
    """The model as MLflow's sklearn flavour stores it: skops, explicit trusted types."""
    skops_types.save(model, folder / f"{name}.skops")


def card(version: int, spec: Spec, ref: TrainingSetRef, gates: tuple[GateResult, ...], **extra):
    """The card files of `version`, from what this script knows of it."""
    return card_files(
        CardFacts(
            model=spec.model.name,
            version=version,
            run_id=f"bare-{version}",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
            aliases=(),
            tags={},
            metrics=extra.pop("metrics", {}),
            params={"estimator": spec.model.estimator},
            window=DataWindow(ref.batch_keys, ref.train_rows, ref.holdout_rows),
            gates=tuple(
                GateLine(g.name, "pass" if g.passed else "fail", g.description) for g in gates
            ),
            approval={},
            intended_use=spec.model.intended_use or "",
            limitations=spec.model.limitations or "",
            primary_metric=spec.evaluation.primary_metric,
            mlflow_run_url="",
            **extra,
        )
    )


def run_bare(spec: Spec, paths: Paths, models: Path) -> dict[str, float]:
    """The job's work once; seconds per phase (named after the job's steps)."""
    phases = Phases()
    keys = phases.run("training_dataset", lambda: ingest(spec, paths))
    ref = phases.run("training_dataset", lambda: build_window(keys, spec, paths))
    pii = phases.run("pii_check", lambda: training_set_pii_gate(ref, spec))
    judged((pii,))

    holdout_fit = phases.run("candidate_model", lambda: fit_pipeline(ref.load_train(), spec))
    phases.run("candidate_model", lambda: store(holdout_fit, models, "holdout_fit"))

    def evaluate():
        holdout = ref.load_holdout()
        outcome = evaluate_candidate(Contender(1, holdout_fit), "bare-1", None, holdout, ref, spec)
        return outcome, score_by_group(holdout_fit, holdout, spec)

    outcome, groups = phases.run("model_evaluation", evaluate)
    judged(outcome.gates)

    def refit():
        model = fit_pipeline(save_window(ref), spec)
        store(model, models, "refit")
        holdout = ref.load_holdout()
        bundle = build_bundle(
            model,
            spec,
            name=spec.model.name,
            version=2,
            fingerprint=ref.fingerprint,
            holdout=holdout,
            directory=gated_bundle_dir(spec, spec.model.name, 2),
        )
        gates = (
            model_size_gate((models / "refit.skops").stat().st_size, spec),
            resources_gate(bundle, holdout, spec),
            onnx_parity_gate(read_meta(bundle), spec),
        )
        return bundle, judged(gates)

    gated_bundle, artifact_gates = phases.run("refit_model", refit)

    def reports():
        folder = paths.reports / f"{spec.model.name}-v1"
        folder.mkdir(parents=True, exist_ok=True)
        holdout = ref.load_holdout()
        model_quality_report(_scored(holdout_fit, holdout, spec), spec, folder / "quality.html")
        newest = pd.read_parquet(ref.newest_batch)
        data_drift_report(ref.load_train(), newest, spec, folder / "data_drift.html")

    phases.run("evaluation_reports", reports)

    def holdout_card():
        folder = paths.home / "cards" / f"{spec.model.name}-v1"
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {
            **outcome.metrics,
            **{f"{g}/{k}": v for g, f in groups.items() for k, v in f.items()},
        }
        for name, content in card(1, spec, ref, outcome.gates, metrics=metrics).items():
            (folder / name).write_bytes(content)

    phases.run("model_card", holdout_card)
    metric = spec.evaluation.primary_metric
    phases.run(
        "champion",
        lambda: save_champion_reference(ref.window_path, 2, outcome.metrics[metric], spec, paths),
    )

    def export():
        bundle = seal_with_attachments(
            gated_bundle,
            spec.paths.bundles / f"{spec.model.name}-v2",
            lambda meta: card(
                2, spec, ref, (*outcome.gates, *artifact_gates), metrics=dict(outcome.metrics)
            ),
        )
        return judged((onnx_parity_gate(read_meta(bundle), spec),)), bundle

    _, bundle = phases.run("model_bundle", export)
    phases.run("bundle_secrets_check", lambda: judged((bundle_secrets_gate(bundle, spec),)))
    phases.run("vulnerabilities_check", lambda: judged((vulnerabilities_gate(spec),)))
    return phases.seconds


def main(argv: list[str]) -> int:
    spec = load_spec(Path(argv[0]) if argv else None)
    with tempfile.TemporaryDirectory(prefix="ct-bare-models-") as models:
        phases = run_bare(spec, Paths.from_env(), Path(models))
    print(json.dumps({"import_started": IMPORT_STARTED, "imported": IMPORTED, "phases": phases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
