"""The model card of one registered version, in Markdown and HTML.

Everything on a card is read from that version's own records: its MLflow version tags (gate
verdicts `ct.gate.<name>` and reasons `ct.gate.<name>.reason`, `ct.batches`, `ct.semver`,
`ct.refit_of`, approval), its run's metrics and parameters, its training set (found by its
data fingerprint) and, once exported, its bundle's ONNX parity figures. Never "the current"
champion or the newest training set. The spec contributes only its free text
(`model.intended_use`, `model.limitations`).

The card is logged to the version's MLflow run (`card/card.md`, `card/card.html`) and shipped
inside its serving bundle (`card.md`, `card.html`), where the server reads it.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ct_platform.governance.approval import (
    APPROVAL_REASON_TAG,
    APPROVAL_TAG,
    APPROVED_AT_TAG,
    APPROVED_BY_TAG,
    REFIT_OF_TAG,
    decision_tags,
)
from ct_platform.registry.versions import DAGSTER_RUN_TAG, INTERVAL_TAG_PREFIX
from ct_platform.settings import Paths, Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo
    from ct_platform.serving.bundle import BundleMeta
    from ct_platform.training.gates import GateResult

CARD_MARKDOWN = "card.md"
CARD_HTML = "card.html"
CARD_ARTIFACT_DIR = "card"
GATE_TAG_PREFIX = "ct.gate."
REASON_SUFFIX = ".reason"
SEMVER_TAG = "ct.semver"
BATCHES_TAG = "ct.batches"
DAGSTER_RUN_URL_TAG = "dagster.run_url"
GROUP_PREFIX = "group/"
HOLDOUT_PREFIX = "holdout_"
# Gates judged on the exported serving bundle (asset checks on `model_bundle`), after the
# bundle and the card inside it were sealed: the card logged to MLflow is rewritten with them.
BUNDLE_GATES = ("bundle_secrets", "vulnerabilities")
NOT_JUDGED_YET = "not judged yet"
# Gates whose figures describe what serving the model costs.
RESOURCE_GATES = ("latency", "model_size", "resources", "memory")
# Run metrics that are gate figures (`gate.<name>.<figure>`) and the naive baseline's.
GATE_METRIC_PREFIX = "gate."
BASELINE_PREFIX = "holdout_baseline_"
# How the table's other columns were computed (`training.comparison`, `training.baseline`).
TABLE_NOTES = {
    "95 % confidence interval": "over the holdout rows, by the method named beside it: delong "
    "(DeLong's variance, normal interval: two-class roc_auc), wilson (Wilson's score "
    "interval for a proportion: accuracy), t (t interval on the absolute errors: mae), "
    "bootstrap (percentile bootstrap, 1,000 resamples, fixed seed; for f1 and "
    "balanced_accuracy drawn as confusion-matrix counts, which is resampling the rows), "
    "bootstrap_normal (the value +- 1.96 x the standard error of 200 bootstrap resamples, "
    "whose Monte Carlo error is about 5 %: rmse and r2 beyond 20,000 holdout rows, "
    "multi-class roc_auc)",
    "naive baseline": "scikit-learn's DummyRegressor / DummyClassifier fitted on the same "
    "training rows (median for mae, mean for rmse and r2, class frequencies for roc_auc, the "
    "positive class for two-class f1, else the most frequent class), scored on the same "
    "holdout; the baseline gate judges the primary metric against it",
}
# Suffixes of a metric's confidence-interval bounds, as runs record them.
CI_BOUNDS = (("_ci_low", "_ci_high"), (".ci_low", ".ci_high"), ("_ci_lower", "_ci_upper"))
# One line of the version description `describe_verdict` writes: "- name: pass (...): why".
_VERDICT_LINE = re.compile(r"^- (?P<name>[\w.-]+): (?P<verdict>pass|FAIL) \([^)]*\): (?P<why>.*)$")
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


@dataclass(frozen=True)
class GateLine:
    name: str
    verdict: str  # pass | fail | unknown
    reason: str


@dataclass(frozen=True)
class DataWindow:
    batches: tuple[str, ...]
    train_rows: int | None = None
    holdout_rows: int | None = None
    time_range: tuple[str, str] | None = None
    note: str = ""
    # A whole-window refit learned from every row; train/holdout are its holdout fit's split.
    whole_window: bool = False


@dataclass(frozen=True)
class CardFacts:
    """What a card says, gathered from one version's records."""

    model: str
    version: int
    run_id: str
    created_at: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    window: DataWindow
    gates: tuple[GateLine, ...]
    approval: dict[str, str]
    intended_use: str
    limitations: str
    primary_metric: str
    mlflow_run_url: str
    parity: dict[str, object] = field(default_factory=dict)
    onnx: str = ""
    # Metric -> how it was computed, for the spec's task (`evaluate.METRIC_DEFINITIONS`).
    metric_notes: dict[str, str] = field(default_factory=dict)
    # Run metric (`holdout_<metric>`) -> how its confidence interval was computed.
    interval_methods: dict[str, str] = field(default_factory=dict)


def gather_facts(
    registry: ModelRegistry,
    version: int,
    spec: Spec,
    paths: Paths,
    bundle: BundleMeta | None = None,
) -> CardFacts:
    """Read `version`'s own records (and `bundle`'s parity, when it was exported)."""
    info = registry.version(version)
    holdout_fit = registry.version(int(info.tags[REFIT_OF_TAG])) if info.is_refit else None
    run = registry.run_record(info.run_id)
    return CardFacts(
        model=info.name,
        version=info.version,
        run_id=info.run_id,
        created_at=info.created_at.isoformat(timespec="seconds"),
        aliases=tuple(info.aliases),
        tags=info.tags,
        metrics=_own_and_holdout_metrics(info, holdout_fit),
        params=run.params,
        window=_data_window(info, spec, paths),
        gates=_gate_lines(info.tags, registry.version_description(version)),
        approval=decision_tags(registry, info, holdout_fit),
        intended_use=spec.model.intended_use or "Not stated in the spec (model.intended_use).",
        limitations=spec.model.limitations or "Not stated in the spec (model.limitations).",
        primary_metric=spec.evaluation.primary_metric,
        mlflow_run_url=run.artifacts_url,
        parity=_parity(bundle),
        metric_notes=_metric_notes(spec),
        onnx=_onnx(bundle),
        interval_methods={
            key.removeprefix(INTERVAL_TAG_PREFIX): method
            for key, method in run.tags.items()
            if key.startswith(INTERVAL_TAG_PREFIX)
        },
    )


def render_markdown(facts: CardFacts) -> str:
    sections = [
        f"# Model card: {_md(facts.model)} version {facts.version}",
        _summary(facts),
        "## Intended use\n\n" + _md(facts.intended_use),
        "## Data window\n\n" + _window_section(facts.window),
        "## Fingerprint and lineage\n\n" + _lineage_section(facts),
        "## Metrics\n\n" + _metrics_section(facts),
        "## Per-group figures\n\n" + _groups_section(facts.metrics, facts.metric_notes),
        "## Gates\n\n" + _gates_section(facts.gates, facts.metrics),
        "## ONNX parity\n\n" + _parity_section(facts),
        "## Resources\n\n" + _resources_section(facts),
        "## Approval\n\n" + _approval_section(facts.approval),
        "## Limitations\n\n" + _md(facts.limitations),
    ]
    return "\n\n".join(sections) + "\n"


def render_html(markdown: str, title: str) -> str:
    """The Markdown as a standalone HTML page; raw HTML in the text is escaped, not kept."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem}"
        f"</style></head><body>\n{body}</body></html>\n"
    )


def card_files(facts: CardFacts) -> dict[str, bytes]:
    """`{card.md: ..., card.html: ...}`, UTF-8."""
    markdown = render_markdown(facts)
    page = render_html(markdown, f"Model card: {facts.model} version {facts.version}")
    return {CARD_MARKDOWN: markdown.encode(), CARD_HTML: page.encode()}


def card_directory(info: ModelVersionInfo, paths: Paths | None = None) -> Path:
    """`<CT_HOME>/cards/<model>-v<version>/`: where a version's card files are written."""
    return _card_directory(info.name, info.version, paths or Paths.from_env())


def _card_directory(model: str, version: int, paths: Paths) -> Path:
    return paths.home / "cards" / f"{model}-v{version}"


def record_bundle_verdict(
    registry: ModelRegistry, bundle_dir: Path, gate: GateResult, spec: Spec
) -> int:
    """Record a gate judged on the bundle in `bundle_dir` on the version that bundle holds
    (tags `ct.gate.<name>`, `.reason`, figures as run metrics) and log that version's card
    again, now with the verdict. Returns the version.

    The card sealed inside the bundle was written before the bundle could be judged: it says
    "not judged yet" for these gates.
    """
    from ct_platform.serving.bundle import read_meta
    from ct_platform.training.evaluation_run import record_gate_verdicts

    meta = read_meta(bundle_dir)
    info = registry.version(int(meta.version))
    record_gate_verdicts(registry, info, [gate])
    write_card(registry, info.version, spec, bundle=meta)
    return info.version


def write_card(
    registry: ModelRegistry,
    version: int,
    spec: Spec,
    directory: Path | None = None,
    bundle: BundleMeta | None = None,
) -> dict[str, bytes]:
    """Build `version`'s card, write it into `directory` (default `card_directory`) and log
    it to the version's run as `card/card.md` and `card/card.html`.

    Returns the files written (name -> bytes), e.g. to ship them inside a bundle.
    """
    from ct_platform.atomic import write_atomically

    paths = Paths.from_env()
    facts = gather_facts(registry, version, spec, paths, bundle)
    files = card_files(facts)
    directory = directory or _card_directory(facts.model, facts.version, paths)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomically(directory / name, content)
        registry.log_artifact(facts.run_id, directory / name, CARD_ARTIFACT_DIR)
    return files


# --- gathering --------------------------------------------------------------------------


def _own_and_holdout_metrics(
    info: ModelVersionInfo, holdout_fit: ModelVersionInfo | None
) -> dict[str, float]:
    """A refit's own run metrics, plus the per-group figures its holdout fit measured (a
    refit has no holdout of its own to measure them on)."""
    if holdout_fit is None:
        return info.metrics
    groups = {k: v for k, v in holdout_fit.metrics.items() if k.startswith(GROUP_PREFIX)}
    return {**groups, **info.metrics}


def _data_window(info: ModelVersionInfo, spec: Spec, paths: Paths) -> DataWindow:
    from ct_platform.training.datasets import MissingTrainingSet, load_training_set

    batches = tuple(b for b in info.tags.get(BATCHES_TAG, "").split(",") if b)
    try:
        training_set = load_training_set(info.fingerprint, paths)
    except MissingTrainingSet as missing:
        return DataWindow(batches, note=f"training set not on this machine: {missing}")
    time_column = spec.dataset.time_column
    if time_column is None:
        return DataWindow(
            batches,
            training_set.train_rows,
            training_set.holdout_rows,
            note="the spec declares no time column: batches are in landing order",
            whole_window=info.is_refit,
        )
    import pandas as pd

    times = pd.concat(
        [
            pd.read_parquet(path, columns=[time_column])[time_column]
            for path in (training_set.train_path, training_set.holdout_path)
        ]
    ).dropna()
    time_range = (str(times.min()), str(times.max())) if len(times) else None
    return DataWindow(
        batches,
        training_set.train_rows,
        training_set.holdout_rows,
        time_range,
        whole_window=info.is_refit,
    )


def _gate_lines(tags: Mapping[str, str], description: str) -> tuple[GateLine, ...]:
    """Each gate's verdict tag with its reason tag, else the reason in the description."""
    described = {
        match["name"]: match["why"]
        for match in map(_VERDICT_LINE.match, description.splitlines())
        if match
    }
    names = sorted(
        key.removeprefix(GATE_TAG_PREFIX)
        for key in tags
        if key.startswith(GATE_TAG_PREFIX) and not key.endswith(REASON_SUFFIX)
    )
    judged = tuple(
        GateLine(
            name,
            tags[GATE_TAG_PREFIX + name],
            tags.get(GATE_TAG_PREFIX + name + REASON_SUFFIX)
            or described.get(name, "no reason recorded"),
        )
        for name in names
    )
    waiting = tuple(
        GateLine(
            name,
            NOT_JUDGED_YET,
            "judged on the serving bundle once it is exported (after this card was sealed "
            "into it); the card logged to the version's MLflow run then shows the verdict",
        )
        for name in BUNDLE_GATES
        if name not in names
    )
    return judged + waiting if names else ()


def _parity(bundle: BundleMeta | None) -> dict[str, object]:
    if bundle is None or bundle.parity is None:
        return {}
    parity = bundle.parity
    # Predicted labels exist for a classifier only; a regressor's values are the diffs below.
    labels = (
        {"labels identical": parity.labels_identical} if bundle.task == "classification" else {}
    )
    return {
        "passed": parity.passed,
        "rows": parity.rows,
        "rows over tolerance": parity.rows_over,
        **labels,
        "max abs diff": parity.max_abs_diff,
        "max rel diff": parity.max_rel_diff,
        "tolerance": parity.tolerance,
        "relative tolerance": parity.relative_tolerance,
    }


def _metric_notes(spec: Spec) -> dict[str, str]:
    """How the task's metrics were computed, where the name alone does not say."""
    from ct_platform.training.evaluate import METRIC_DEFINITIONS, task_metrics

    return {m: METRIC_DEFINITIONS[m] for m in task_metrics(spec) if m in METRIC_DEFINITIONS}


def _onnx(bundle: BundleMeta | None) -> str:
    if bundle is None:
        return ""
    if bundle.onnx.enabled:
        return "serves the ONNX graph"
    return f"serves the scikit-learn fallback: {bundle.onnx.reason}"


# --- rendering --------------------------------------------------------------------------


def _md(value: object) -> str:
    """A value as Markdown text: one line, every character Markdown would act on escaped."""
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def _number(value: object) -> str:
    if isinstance(value, float):
        return "undefined" if math.isnan(value) else f"{value:.4g}"
    return _md(value)


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(facts: CardFacts) -> str:
    aliases = ", ".join(facts.aliases) or "none"
    return "\n".join(
        [
            f"- **Semantic version**: {_md(facts.tags.get(SEMVER_TAG, 'not recorded'))}",
            f"- **Registered**: {_md(facts.created_at)}",
            f"- **Aliases when this card was written**: {_md(aliases)}",
            f"- **Gates passed**: {_md(facts.tags.get('ct.gates_passed', 'no verdict yet'))}",
        ]
    )


def _window_section(window: DataWindow) -> str:
    first_last = f"{window.batches[0]} … {window.batches[-1]}" if window.batches else "none"
    rows = "not recorded"
    if window.train_rows is not None:
        total = window.train_rows + (window.holdout_rows or 0)
        rows = f"{total} ({window.train_rows} train, {window.holdout_rows} holdout)"
        if window.whole_window:
            rows = (
                f"{total}, all learned from (a whole-window refit; its holdout fit trained on "
                f"{window.train_rows} and was judged on the newest {window.holdout_rows})"
            )
    time_range = " to ".join(window.time_range) if window.time_range else "not available"
    lines = [
        f"- **Batches**: {len(window.batches)} ({_md(first_last)})",
        f"- **Rows**: {rows}",
        f"- **Time range**: {_md(time_range)}",
    ]
    if window.note:
        lines.append(f"- **Note**: {_md(window.note)}")
    if window.batches:
        lines.append(f"- **Batch keys**: {_md(', '.join(window.batches))}")
    return "\n".join(lines)


def _lineage_section(facts: CardFacts) -> str:
    tags = facts.tags
    dagster_run = tags.get(DAGSTER_RUN_TAG)
    dagster = _md(dagster_run) if dagster_run else "not trained by a Dagster run"
    if dagster_run and tags.get(DAGSTER_RUN_URL_TAG):
        dagster = f"[{_md(dagster_run)}](<{tags[DAGSTER_RUN_URL_TAG]}>)"
    lines = [
        f"- **Data fingerprint**: `{tags.get('fingerprint', 'not recorded')}`",
        f"- **MLflow run**: [{_md(facts.run_id)}](<{facts.mlflow_run_url}>)",
        f"- **Dagster run**: {dagster}",
    ]
    if tags.get(REFIT_OF_TAG):
        lines.append(f"- **Refit of version**: {_md(tags[REFIT_OF_TAG])}")
    if facts.params:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(facts.params.items()))
        lines.append(f"- **Parameters**: {_md(shown)}")
    return "\n".join(lines)


def _metrics_section(facts: CardFacts) -> str:
    """The model's own metrics (holdout ones next to the naive baseline's on the same rows)
    with their confidence interval when the run recorded one; gate figures are apart."""
    metrics = facts.metrics
    bounds = {low for low, _ in CI_BOUNDS} | {high for _, high in CI_BOUNDS}
    rows = []
    for name in sorted(metrics):
        skipped = (GROUP_PREFIX, GATE_METRIC_PREFIX, BASELINE_PREFIX)
        if name.startswith(skipped) or any(name.endswith(b) for b in bounds):
            continue
        method = facts.interval_methods.get(name)
        interval = next(
            (
                f"{metrics[name + low]:.4g} to {metrics[name + high]:.4g}"
                + (f" ({method})" if method else "")
                for low, high in CI_BOUNDS
                if name + low in metrics and name + high in metrics
            ),
            "not recorded",
        )
        baseline = metrics.get(name.replace(HOLDOUT_PREFIX, BASELINE_PREFIX, 1), "")
        rows.append((name, metrics[name], interval, baseline))
    if not rows:
        return "No metrics recorded yet (the version has not been evaluated)."
    primary = f"Primary metric: {_md(facts.primary_metric)}; `{HOLDOUT_PREFIX}*` is on the holdout."
    header = ("metric", "value", "95 % confidence interval", "naive baseline, same holdout")
    return "\n\n".join(
        [primary, _table(header, rows), *_warnings(metrics), *_notes(facts.metric_notes, metrics)]
    )


def _warnings(metrics: Mapping[str, float]) -> list[str]:
    """What a reader must not miss in the table: a model no better than a naive one."""
    r2 = metrics.get(f"{HOLDOUT_PREFIX}r2", math.nan)
    if not r2 < 0:
        return []
    worse = f"{HOLDOUT_PREFIX}r2 is {r2:.4g}: the model predicts the holdout worse than its mean"
    return [f"**Warning**: {_md(worse)}."]


def _notes(notes: Mapping[str, str], metrics: Mapping[str, float]) -> list[str]:
    """How the figures shown were computed: each metric's definition (with why it is
    undefined, only where the figure is), the intervals and the baseline."""
    from ct_platform.training.evaluate import UNDEFINED_WHEN

    lines = []
    for name, how in notes.items():
        figure = metrics.get(HOLDOUT_PREFIX + name)
        if figure is not None and math.isnan(figure) and name in UNDEFINED_WHEN:
            how += f"; undefined here: {UNDEFINED_WHEN[name]}"
        lines.append(f"- **{_md(name)}**: {_md(how)}")
    lines += [f"- **{_md(name)}**: {_md(how)}" for name, how in TABLE_NOTES.items()]
    return ["How the metrics were computed:\n\n" + "\n".join(lines)]


def _groups_section(metrics: Mapping[str, float], notes: Mapping[str, str]) -> str:
    groups: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        if name.startswith(GROUP_PREFIX):
            group, _, figure = name.removeprefix(GROUP_PREFIX).rpartition("/")
            groups.setdefault(group, {})[figure] = value
    if not groups:
        return "No per-group figures recorded (the spec names no sensitive column)."
    figures = sorted({figure for values in groups.values() for figure in values})
    rows = [
        (group, *(groups[group].get(figure, math.nan) for figure in figures))
        for group in sorted(groups)
    ]
    computed = [f"{_md(f)}: {_md(notes[f])}" for f in figures if f in notes]
    how = ["Each group's figure is computed on its own rows. " + "; ".join(computed)]
    return "\n\n".join([_table(("group", *figures), rows), *(how if computed else [])])


def _gates_section(gates: tuple[GateLine, ...], metrics: Mapping[str, float]) -> str:
    """Each gate's verdict and reason, then the figures it recorded (`gate.<name>.<figure>`
    run metrics), apart from the model's own metrics."""
    if not gates:
        return "No gate verdict recorded yet."
    verdicts = _table(("gate", "verdict", "reason"), [(g.name, g.verdict, g.reason) for g in gates])
    figures = [
        (*name.removeprefix(GATE_METRIC_PREFIX).split(".", 1), value)
        for name, value in sorted(metrics.items())
        if name.startswith(GATE_METRIC_PREFIX)
    ]
    if not figures:
        return verdicts
    return "\n\n".join(
        [verdicts, "Figures the gates recorded:", _table(("gate", "figure", "value"), figures)]
    )


def _parity_section(facts: CardFacts) -> str:
    if not facts.parity:
        return (
            "Not measured yet: parity is checked on the holdout when this version is exported "
            "for serving (the card in its bundle has the figures)."
        )
    rows = [(name, value) for name, value in facts.parity.items()]
    return f"The bundle {_md(facts.onnx)}.\n\n" + _table(("figure", "value"), rows)


def _resources_section(facts: CardFacts) -> str:
    rows = [(g.name, g.verdict, g.reason) for g in facts.gates if g.name in RESOURCE_GATES]
    if not rows:
        return "No resource gate recorded yet."
    return _table(("gate", "verdict", "figures"), rows)


def _approval_section(tags: Mapping[str, str]) -> str:
    state = tags.get(APPROVAL_TAG)
    if state is None:
        return "No approval recorded (not required by the spec when this version was promoted)."
    if state == "pending":
        return "Waiting for a person's approval."
    return "\n".join(
        [
            f"- **Decision**: {_md(state)}",
            f"- **By**: {_md(tags.get(APPROVED_BY_TAG, '?'))}",
            f"- **At**: {_md(tags.get(APPROVED_AT_TAG, '?'))}",
            f"- **Reason**: {_md(tags.get(APPROVAL_REASON_TAG, ''))}",
        ]
    )
