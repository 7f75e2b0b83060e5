"""The dataset contract: every rule the spec implies, checked on one raw batch.

Each rule reports figures (counts, shares, what was seen) whether it passes or not, so a
quarantine record or a Dagster check says *how* wrong a batch is, not just that it is.
When every rule passes, the result carries the cleaned frame the rest of the platform uses
(see docs/architecture.md, "Cleaned frames").
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ct_platform.settings import ColumnSpec, DatasetSpec, TargetRules
from ct_platform.text_values import NUMBER_TEXT

# Magnitudes beyond this are not measurements but overflow, unit mix-ups or filler values;
# float32 (what ONNX serving computes in) has lost all integer precision long before.
ABSURD_MAGNITUDE = 1e15
# How many distinct offending values a rule's figures quote.
MAX_EXAMPLES = 5

Figures = dict[str, float | int | str]


@dataclass(frozen=True)
class RuleResult:
    rule: str
    column: str | None
    passed: bool
    message: str
    figures: Figures = field(default_factory=dict)

    def describe(self) -> str:
        """One line naming the rule and, for a column rule, the column: for logs and CI."""
        where = f"column '{self.column}', rule {self.rule}" if self.column else self.rule
        return f"{where}: {self.message}"


@dataclass
class ContractResult:
    rules: list[RuleResult]
    n_rows: int
    clean: pd.DataFrame | None  # None when any rule failed

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)

    @property
    def failed(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.passed]

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "n_rows": self.n_rows,
            "rules": [asdict(rule) for rule in self.rules],
        }


def check_contract(frame: pd.DataFrame, dataset: DatasetSpec) -> ContractResult:
    """Check a raw batch (strings from CSV, or typed Parquet) against the dataset spec."""
    rules = [_check_min_rows(frame, dataset), _check_columns(frame, dataset)]
    rules.append(_check_duplicates(frame, dataset))
    parsed: dict[str, pd.Series] = {}
    column_counts = pd.Index(frame.columns).value_counts()
    for name, column in dataset.columns.items():
        if column_counts.get(name, 0) != 1:
            continue  # missing or ambiguous: already reported by the columns rule
        rules.extend(_column_rules(frame[name], name, column, dataset, parsed))
    if column_counts.get(dataset.target, 0) == 1:
        rules.extend(_target_rules(frame[dataset.target], dataset))
    result = ContractResult(rules=rules, n_rows=len(frame), clean=None)
    if result.passed:
        result.clean = _clean_frame(frame, parsed, dataset)
    return result


def check_time_and_target(frame: pd.DataFrame, dataset: DatasetSpec) -> list[RuleResult]:
    """Ingest's rules on the time column and the target, for those of the two `frame` holds.

    `frame` holds raw values as `data.reader` reads them (CSV text, empty field = missing;
    typed Parquet), other columns are ignored. For a file that is compared rather than
    admitted (`ct drift`'s CURRENT), whose feature columns are checked elsewhere. The results
    are the very `RuleResult`s `check_contract` gives for these columns, in the same words.
    """
    rules: list[RuleResult] = []
    time_column = dataset.time_column
    if time_column is not None and time_column in frame.columns:
        column = dataset.columns[time_column]
        rules.extend(_column_rules(frame[time_column], time_column, column, dataset, {}))
    if dataset.target in frame.columns:
        rules.extend(_target_rules(frame[dataset.target], dataset))
    return rules


def _column_rules(
    series: pd.Series,
    name: str,
    column: ColumnSpec,
    dataset: DatasetSpec,
    parsed: dict[str, pd.Series],
) -> list[RuleResult]:
    """A spec column's rules; its parsed values are stored in `parsed` (for the clean frame)."""
    # A row without its time cannot be put in order (it would sort into the holdout).
    nullable = column.nullable and name != dataset.time_column
    rules = [_check_completeness(series, name, nullable, dataset)]
    if column.is_numeric:
        values, invalid = _parse_numeric(series, column)
        parsed[name] = values
        rules.append(_check_type(series, name, column, invalid))
        rules.append(_check_finite(name, values))
        if column.min is not None or column.max is not None:
            rules.append(_check_range(name, column.min, column.max, values, column.sentinels))
    elif column.is_temporal:
        times, invalid = _parse_temporal(series, column)
        parsed[name] = times
        rules.append(_check_type(series, name, column, invalid))
    else:
        rules.append(_check_categories(series, name, column))
    return rules


def _target_rules(target: pd.Series, dataset: DatasetSpec) -> list[RuleResult]:
    rules = [
        _check_completeness(target, dataset.target, True, dataset),
        _check_target(target, dataset),
    ]
    if dataset.target_rules is not None:
        rules.append(_check_target_range(target, dataset.target, dataset.target_rules))
    return rules


# --- table-level rules -------------------------------------------------------------------


def _check_min_rows(frame: pd.DataFrame, dataset: DatasetSpec) -> RuleResult:
    n_rows = len(frame)
    passed = n_rows >= dataset.min_rows
    return RuleResult(
        "min_rows",
        None,
        passed,
        f"{n_rows} rows" + ("" if passed else f", fewer than the minimum {dataset.min_rows}"),
        {"n_rows": n_rows, "min_rows": dataset.min_rows},
    )


def _check_columns(frame: pd.DataFrame, dataset: DatasetSpec) -> RuleResult:
    """The header against the spec; a spec name absent from the header names its spec key.

    Dropped columns are checked too: a misspelled `drop_columns` entry would otherwise let
    the column it meant to drop through as "unexpected", or silently drop nothing.
    """
    present = [str(c) for c in frame.columns]
    absent = {
        "dataset.columns": [c for c in dataset.columns if c not in present],
        "dataset.target": [dataset.target] if dataset.target not in present else [],
        "dataset.drop_columns": [c for c in dataset.drop_columns if c not in present],
    }
    allowed = {*dataset.columns, dataset.target, *dataset.drop_columns}
    unexpected = [c for c in present if c not in allowed]
    duplicated = sorted({c for c in present if present.count(c) > 1})
    problems = [
        f"{key} names {_with_hints(names, unexpected)}, absent from the file header"
        for key, names in absent.items()
        if names
    ]
    if unexpected:
        problems.append(f"unexpected columns not in the spec: {unexpected}")
    if duplicated:
        problems.append(f"duplicated names {duplicated}")
    missing = [name for names in absent.values() for name in names]
    n_expected = len(dataset.columns) + 1 + len(dataset.drop_columns)
    return RuleResult(
        "columns",
        None,
        not problems,
        "; ".join(problems) if problems else f"all {n_expected} expected columns present",
        {
            "n_missing": len(missing),
            "missing": ", ".join(missing),
            "n_unexpected": len(unexpected),
            "unexpected": ", ".join(unexpected),
            "duplicated": ", ".join(duplicated),
        },
    )


def _with_hints(names: list[str], candidates: list[str]) -> str:
    """`'duraton' (did you mean 'duration'?)` for each name with a close unexpected header."""
    described = []
    for name in names:
        close = difflib.get_close_matches(name, candidates, n=1)
        described.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(described)


def _check_duplicates(frame: pd.DataFrame, dataset: DatasetSpec) -> RuleResult:
    n_duplicates = int(frame.duplicated().sum()) if len(frame) else 0
    rate = n_duplicates / len(frame) if len(frame) else 0.0
    passed = rate <= dataset.duplicate_rate_max
    return RuleResult(
        "duplicates",
        None,
        passed,
        f"{n_duplicates} duplicate rows ({rate:.2%}; maximum {dataset.duplicate_rate_max:.2%})",
        {"n_duplicates": n_duplicates, "rate": rate, "max_rate": dataset.duplicate_rate_max},
    )


# --- column rules ------------------------------------------------------------------------


def _check_completeness(
    series: pd.Series, name: str, nullable: bool, dataset: DatasetSpec
) -> RuleResult:
    # A sentinel (pdays=999) is a recorded answer, so it counts as present here.
    return completeness_rule(name, len(series), int(series.isna().sum()), nullable, dataset)


def completeness_rule(
    name: str, n_rows: int, n_missing: int, nullable: bool, dataset: DatasetSpec
) -> RuleResult:
    """The completeness rule on a column of `n_rows` values, `n_missing` of them missing:
    none when the column is not nullable, else a share of non-missing values of at least
    `dataset.completeness_min` (ingest's rule; `ct drift` applies it to its counts)."""
    share = 1.0 - n_missing / n_rows if n_rows else 1.0
    if not nullable and n_missing:
        passed, limit = False, "the column is not nullable"
    else:
        passed = share >= dataset.completeness_min
        limit = f"minimum {dataset.completeness_min:.1%}"
    return RuleResult(
        "completeness",
        name,
        passed,
        f"{share:.1%} non-missing, {n_missing} missing ({limit})",
        {"non_missing_share": share, "n_missing": n_missing, "min": dataset.completeness_min},
    )


def _parse_numeric(series: pd.Series, column: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    """Values as float64 (unparseable -> NaN) and a mask of present-but-invalid values."""
    text_sentinels = [s for s in column.sentinels if isinstance(s, str)]
    is_text_sentinel = series.astype(object).isin(text_sentinels)
    if pd.api.types.is_bool_dtype(series):
        values = pd.Series(np.nan, index=series.index)  # True/False is not a number here
    else:
        values = pd.to_numeric(series.where(_looks_numeric(series)), errors="coerce")
        values = values.astype("float64")
    invalid = series.notna() & values.isna() & ~is_text_sentinel
    if column.type == "int":
        finite = np.isfinite(values)
        invalid |= finite & (values % 1 != 0)
    return values.where(~is_text_sentinel), invalid


def _looks_numeric(series: pd.Series) -> pd.Series:
    """Which values may be read as numbers: numbers, and text that spells one as the model
    server and `ct drift` read text (`text_values.NUMBER_TEXT`; not "1_000" or "0x10")."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        return pd.Series(True, index=series.index)
    # Judged once per distinct value: a column holds far fewer than it has rows.
    distinct = pd.Series(series.unique(), dtype=object)
    numeric = distinct[distinct.astype(str).str.strip().str.fullmatch(NUMBER_TEXT)]
    return series.isin(numeric)


def _parse_temporal(series: pd.Series, column: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    """Values as datetime64 (unparseable -> NaT) and a mask of present-but-invalid values.

    Parsed with the spec's strftime format only, never guessed: "01/02/11" is one date.
    Typed input (a Parquet batch with a timestamp column) is taken as it is.
    """
    if pd.api.types.is_datetime64_any_dtype(series):
        return series, pd.Series(False, index=series.index)
    text = series.map(str, na_action="ignore")
    times = pd.to_datetime(text, format=column.format, errors="coerce")
    return times, series.notna() & times.isna()


def _type_phrase(column: ColumnSpec) -> str:
    if column.is_temporal:
        return f"a {column.type} in the format {column.format!r}"
    return "an integer" if column.type == "int" else "a number"


def _check_type(raw: pd.Series, name: str, column: ColumnSpec, invalid: pd.Series) -> RuleResult:
    n_invalid = int(invalid.sum())
    share = n_invalid / len(raw) if len(raw) else 0.0
    kind = _type_phrase(column)
    examples = ", ".join(repr(v) for v in raw[invalid].astype(str).unique()[:MAX_EXAMPLES])
    return RuleResult(
        "type",
        name,
        n_invalid == 0,
        f"{n_invalid} values ({share:.2%}) are not {kind}: {examples}"
        if n_invalid
        else f"all values are {kind}",
        {
            "n_invalid": n_invalid,
            "invalid_share": share,
            "declared": column.type,
            "examples": examples,
            **({"format": column.format} if column.format else {}),
        },
    )


def _check_finite(name: str, values: pd.Series) -> RuleResult:
    n_infinite = int(np.isinf(values).sum())
    n_absurd = int((np.isfinite(values) & (values.abs() > ABSURD_MAGNITUDE)).sum())
    passed = n_infinite == 0 and n_absurd == 0
    return RuleResult(
        "finite",
        name,
        passed,
        "all values finite and plausible"
        if passed
        else f"{n_infinite} infinite values, {n_absurd} beyond ±{ABSURD_MAGNITUDE:g}",
        {"n_infinite": n_infinite, "n_absurd": n_absurd, "max_abs": _max_abs(values)},
    )


def _check_range(
    name: str,
    low: float | None,
    high: float | None,
    values: pd.Series,
    sentinels: list[float | str] | None = None,
) -> RuleResult:
    numeric_sentinels = [float(s) for s in sentinels or [] if not isinstance(s, str)]
    checked = values[values.notna() & ~values.isin(numeric_sentinels)]
    below = checked < (-np.inf if low is None else low)
    outside = checked[below | (checked > (np.inf if high is None else high))]
    seen_min = float(checked.min()) if len(checked) else float("nan")
    seen_max = float(checked.max()) if len(checked) else float("nan")
    examples = ", ".join(f"{value:g}" for value in outside.unique()[:MAX_EXAMPLES])
    bounds = f"[{_bound(low)}, {_bound(high)}]"
    message = f"{len(outside)} values outside {bounds}"
    if len(outside):
        message += f" (e.g. {examples})"
    return RuleResult(
        "range",
        name,
        outside.empty,
        f"{message}; seen [{seen_min:g}, {seen_max:g}]",
        {
            "n_out_of_range": len(outside),
            "examples": examples,
            "min_seen": _json_float(seen_min),
            "max_seen": _json_float(seen_max),
            "min": _json_float(low),
            "max": _json_float(high),
        },
    )


def _bound(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"


def _check_categories(series: pd.Series, name: str, column: ColumnSpec) -> RuleResult:
    present = series.dropna().astype(str)
    if column.categories is None:
        return RuleResult(
            "categories",
            name,
            True,
            "no category list declared",
            {"n_distinct": int(present.nunique())},
        )
    unknown = present[~present.isin(column.categories)]
    counts = unknown.value_counts()
    listed = ", ".join(f"{value!r} ({count})" for value, count in counts.head(MAX_EXAMPLES).items())
    return RuleResult(
        "categories",
        name,
        counts.empty,
        f"{len(unknown)} values outside the declared categories: {listed}"
        if len(unknown)
        else "all values are declared categories",
        {"n_unknown": len(unknown), "n_distinct_unknown": len(counts), "unknown": listed},
    )


def _check_target(series: pd.Series, dataset: DatasetSpec) -> RuleResult:
    name = dataset.target
    present = series.dropna()
    if present.empty:
        return RuleResult(
            "target", name, False, f"target '{name}' is missing in every row", {"n_present": 0}
        )
    if dataset.task == "regression":
        values = pd.to_numeric(present, errors="coerce")
        bad = present[values.isna() | np.isinf(values)]
        expected = "finite numbers"
    else:
        bad = present[~_label_mask(present, dataset.target_labels)]
        expected = f"labels {dataset.target_labels}" if dataset.target_labels else "labels"
    listed = ", ".join(repr(v) for v in bad.astype(str).unique()[:MAX_EXAMPLES])
    return RuleResult(
        "target",
        name,
        bad.empty,
        f"{len(bad)} target values are not {expected}: {listed}"
        if len(bad)
        else f"{len(present)} target values, all {expected}",
        {
            "n_present": len(present),
            "n_invalid": len(bad),
            "invalid": listed,
            "n_classes": int(present.astype(str).nunique()),
        },
    )


def _check_target_range(series: pd.Series, name: str, rules: TargetRules) -> RuleResult:
    """The spec's `target_rules` range on a regression target (non-numbers: the target rule)."""
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    result = _check_range(name, rules.min, rules.max, values)
    return RuleResult("target_range", name, result.passed, result.message, result.figures)


def _label_mask(values: pd.Series, labels: list[int | str] | None) -> pd.Series:
    """Which values are allowed labels; numeric labels compare as numbers ("1.0" is 1)."""
    if labels is None:
        return pd.Series(True, index=values.index)
    if all(isinstance(label, int) for label in labels):
        return pd.to_numeric(values, errors="coerce").isin(labels)
    return values.astype(str).isin([str(label) for label in labels])


# --- the cleaned frame -------------------------------------------------------------------


def _clean_frame(
    frame: pd.DataFrame, parsed: dict[str, pd.Series], dataset: DatasetSpec
) -> pd.DataFrame:
    """Spec columns in spec order plus the target; rows without a target are dropped."""
    clean = pd.DataFrame(index=frame.index)
    for name, column in dataset.columns.items():
        if column.is_numeric:
            sentinels = [float(s) for s in column.sentinels if not isinstance(s, str)]
            clean[name] = parsed[name].mask(parsed[name].isin(sentinels))
        elif column.is_temporal:
            clean[name] = parsed[name]
        else:
            clean[name] = _as_python_strings(frame[name])
    target = frame[dataset.target]
    clean = clean[target.notna()]
    clean[dataset.target] = _clean_target(target.dropna(), dataset)
    return clean.reset_index(drop=True)


def _as_python_strings(series: pd.Series) -> pd.Series:
    # object dtype holding builtin str (not pandas' string dtype): what skl2onnx and the
    # pipeline's OneHotEncoder expect. Missing stays NaN.
    return series.map(str, na_action="ignore").astype(object)


def _clean_target(target: pd.Series, dataset: DatasetSpec) -> pd.Series:
    if dataset.task == "regression":
        return pd.to_numeric(target).astype("float64")
    labels = dataset.target_labels
    if labels and all(isinstance(label, int) for label in labels):
        return pd.to_numeric(target).astype("int64")
    return _as_python_strings(target)


# --- figures helpers ---------------------------------------------------------------------


def _max_abs(values: pd.Series) -> float | str:
    finite = values[np.isfinite(values)]
    return float(finite.abs().max()) if len(finite) else "n/a"


def _json_float(value: float | None) -> float | str:
    # NaN is not JSON; "n/a" keeps figures serialisable and readable.
    if value is None or np.isnan(value):
        return "n/a"
    return float(value)
