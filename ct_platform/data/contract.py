"""The dataset contract: every rule the spec implies, checked on one raw batch.

Each rule reports figures (counts, shares, what was seen) whether it passes or not, so a
quarantine record or a Dagster check says *how* wrong a batch is, not just that it is.
When every rule passes, the result carries the cleaned frame the rest of the platform uses
(see docs/architecture.md, "Cleaned frames").
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ct_platform.settings import ColumnSpec, DatasetSpec
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
        checks = ColumnRules(name, column, dataset)
        values = checks.add(frame[name])
        if values is not None:
            parsed[name] = values
        rules.extend(checks.results())
    if column_counts.get(dataset.target, 0) == 1:
        target = TargetColumnRules(dataset)
        target.add(frame[dataset.target])
        rules.extend(target.results())
    result = ContractResult(rules=rules, n_rows=len(frame), clean=None)
    if result.passed:
        result.clean = _clean_frame(frame, parsed, dataset)
    return result


class TimeAndTargetRules:
    """Ingest's rules on the time column and the target, for those of the two in `columns`,
    fed a file chunk by chunk (`add`) and judged on all of it (`results`).

    For a file that is compared rather than admitted (`ct drift`'s CURRENT), whose feature
    columns are checked elsewhere. Chunks hold raw values as `data.reader` reads the whole
    file (CSV text, empty field = missing; typed Parquet), other columns are ignored. The
    results are the very `RuleResult`s `check_contract` gives for these columns on the whole
    file, in the same words; memory is the chunk in hand plus `ColumnRules`' counts.
    """

    def __init__(self, dataset: DatasetSpec, columns: Collection[str]) -> None:
        self._checks: dict[str, ColumnRules | TargetColumnRules] = {}
        time_column = dataset.time_column
        if time_column is not None and time_column in columns:
            self._checks[time_column] = ColumnRules(
                time_column, dataset.columns[time_column], dataset
            )
        if dataset.target in columns:
            self._checks[dataset.target] = TargetColumnRules(dataset)

    def add(self, frame: pd.DataFrame) -> None:
        for name, checks in self._checks.items():
            checks.add(frame[name])

    def results(self) -> list[RuleResult]:
        return [rule for checks in self._checks.values() for rule in checks.results()]


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
# A column's rules count its values chunk by chunk (`add`) and judge the counts once
# (`results`): ingest gives a batch as one chunk, `ct drift` streams a file of any size in
# chunks, and both get the same results in the same words.


class ColumnRules:
    """Ingest's rules on one spec column: completeness; type, finite and range for a number;
    type for a date or time; categories for a category.

    Memory is a few counts, MAX_EXAMPLES examples per rule and, for a category, the count of
    each distinct value: never the rows.
    """

    def __init__(self, name: str, column: ColumnSpec, dataset: DatasetSpec) -> None:
        self.name, self.column, self.dataset = name, column, dataset
        self.completeness = _Completeness()
        self.type = _Invalid()
        self.finite = _Finite()
        self.range = _Range(column.min, column.max, column.sentinels)
        self.value_counts: dict[str, int] = {}  # a category's present values, as text

    def add(self, series: pd.Series) -> pd.Series | None:
        """Count a chunk of the column's raw values. Returns them parsed for the cleaned
        frame: float64 (NaN for missing and invalid) for a number, datetime64 for a date or
        time; None for a category."""
        self.completeness.add(series)
        if self.column.is_numeric:
            values, invalid = _parse_numeric(series, self.column)
            self.type.add(series, invalid)
            self.finite.add(values)
            self.range.add(values)
            return values
        if self.column.is_temporal:
            times, invalid = _parse_temporal(series, self.column)
            self.type.add(series, invalid)
            return times
        for value, count in series.dropna().astype(str).value_counts().items():
            self.value_counts[value] = self.value_counts.get(value, 0) + int(count)
        return None

    def results(self) -> list[RuleResult]:
        name, column = self.name, self.column
        # A row without its time cannot be put in order (it would sort into the holdout).
        nullable = column.nullable and name != self.dataset.time_column
        rules = [self.completeness.result(name, nullable, self.dataset)]
        if column.is_numeric:
            rules.append(self.type.type_rule(name, column))
            rules.append(self.finite.result(name))
            if column.min is not None or column.max is not None:
                rules.append(self.range.result("range", name))
        elif column.is_temporal:
            rules.append(self.type.type_rule(name, column))
        else:
            rules.append(_categories_rule(name, column, self.value_counts))
        return rules


class TargetColumnRules:
    """Ingest's rules on the target: completeness, labels (or finite numbers for a
    regression) and, given `target_rules`, its range. Counted chunk by chunk like
    `ColumnRules`; a classification target also keeps its distinct labels (as text)."""

    def __init__(self, dataset: DatasetSpec) -> None:
        self.dataset = dataset
        self.completeness = _Completeness()
        self.invalid = _Invalid()  # among the present values
        self.labels: set[str] = set()
        rules = dataset.target_rules
        self.range = _Range(
            None if rules is None else rules.min, None if rules is None else rules.max
        )

    def add(self, series: pd.Series) -> None:
        """Count a chunk of the target's raw values."""
        self.completeness.add(series)
        present = series.dropna()
        if self.dataset.task == "regression":
            values = pd.to_numeric(present, errors="coerce")
            self.invalid.add(present, values.isna() | np.isinf(values))
        else:
            self.invalid.add(present, ~_label_mask(present, self.dataset.target_labels))
            # Distinct integers (booleans) are distinct texts: text of the distinct values
            # only (of each of 10M values, it was 2 s of CPU).
            distinct = present.unique() if present.dtype.kind in "iub" else present
            self.labels.update(pd.Series(distinct).astype(str).unique())
        if self.dataset.target_rules is not None:
            self.range.add(pd.to_numeric(series, errors="coerce").astype("float64"))

    def results(self) -> list[RuleResult]:
        name = self.dataset.target
        rules = [self.completeness.result(name, True, self.dataset), self._target_rule()]
        if self.dataset.target_rules is not None:
            rules.append(self.range.result("target_range", name))
        return rules

    def _target_rule(self) -> RuleResult:
        name, invalid = self.dataset.target, self.invalid
        if invalid.n_rows == 0:
            return RuleResult(
                "target", name, False, f"target '{name}' is missing in every row", {"n_present": 0}
            )
        if self.dataset.task == "regression":
            expected = "finite numbers"
        else:
            labels = self.dataset.target_labels
            expected = f"labels {labels}" if labels else "labels"
        listed = invalid.listed()
        figures: Figures = {
            "n_present": invalid.n_rows,
            "n_invalid": invalid.n_invalid,
            "invalid": listed,
        }
        # A regression target's values are not classes: counting its distinct values would
        # keep every value of a streamed file.
        if self.dataset.task != "regression":
            figures["n_classes"] = len(self.labels)
        return RuleResult(
            "target",
            name,
            invalid.n_invalid == 0,
            f"{invalid.n_invalid} target values are not {expected}: {listed}"
            if invalid.n_invalid
            else f"{invalid.n_rows} target values, all {expected}",
            figures,
        )


@dataclass
class _Completeness:
    n_rows: int = 0
    n_missing: int = 0

    def add(self, series: pd.Series) -> None:
        # A sentinel (pdays=999) is a recorded answer, so it counts as present here.
        self.n_rows += len(series)
        self.n_missing += int(series.isna().sum())

    def result(self, name: str, nullable: bool, dataset: DatasetSpec) -> RuleResult:
        return completeness_rule(name, self.n_rows, self.n_missing, nullable, dataset)


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


@dataclass
class _Invalid:
    """Values that break a rule: how many among how many, and the first MAX_EXAMPLES
    distinct ones as text, first seen first."""

    n_rows: int = 0
    n_invalid: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, raw: pd.Series, invalid: pd.Series) -> None:
        self.n_rows += len(raw)
        self.n_invalid += int(invalid.sum())
        _keep_first(self.examples, raw[invalid].astype(str).unique())

    def listed(self) -> str:
        return ", ".join(repr(value) for value in self.examples)

    def type_rule(self, name: str, column: ColumnSpec) -> RuleResult:
        share = self.n_invalid / self.n_rows if self.n_rows else 0.0
        kind = _type_phrase(column)
        examples = self.listed()
        return RuleResult(
            "type",
            name,
            self.n_invalid == 0,
            f"{self.n_invalid} values ({share:.2%}) are not {kind}: {examples}"
            if self.n_invalid
            else f"all values are {kind}",
            {
                "n_invalid": self.n_invalid,
                "invalid_share": share,
                "declared": column.type,
                "examples": examples,
                **({"format": column.format} if column.format else {}),
            },
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


@dataclass
class _Finite:
    n_infinite: int = 0
    n_absurd: int = 0
    max_abs: float | None = None  # of the finite values

    def add(self, values: pd.Series) -> None:
        self.n_infinite += int(np.isinf(values).sum())
        magnitudes = values[np.isfinite(values)].abs()
        self.n_absurd += int((magnitudes > ABSURD_MAGNITUDE).sum())
        if len(magnitudes):
            largest = float(magnitudes.max())
            self.max_abs = largest if self.max_abs is None else max(self.max_abs, largest)

    def result(self, name: str) -> RuleResult:
        passed = self.n_infinite == 0 and self.n_absurd == 0
        return RuleResult(
            "finite",
            name,
            passed,
            "all values finite and plausible"
            if passed
            else f"{self.n_infinite} infinite values, {self.n_absurd} beyond ±{ABSURD_MAGNITUDE:g}",
            {
                "n_infinite": self.n_infinite,
                "n_absurd": self.n_absurd,
                "max_abs": "n/a" if self.max_abs is None else self.max_abs,
            },
        )


class _Range:
    """Numbers outside [low, high] (sentinels and missing values aside): how many, the first
    MAX_EXAMPLES distinct ones, and the lowest and highest number seen."""

    def __init__(
        self, low: float | None, high: float | None, sentinels: list[float | str] | None = None
    ) -> None:
        self.low, self.high = low, high
        self.sentinels = [float(s) for s in sentinels or [] if not isinstance(s, str)]
        self.n_outside = 0
        self.examples: list[float] = []
        self.seen: tuple[float, float] | None = None

    def add(self, values: pd.Series) -> None:
        checked = values[values.notna() & ~values.isin(self.sentinels)]
        below = checked < (-np.inf if self.low is None else self.low)
        outside = checked[below | (checked > (np.inf if self.high is None else self.high))]
        self.n_outside += len(outside)
        _keep_first(self.examples, outside.unique())
        if len(checked):
            low, high = float(checked.min()), float(checked.max())
            if self.seen is not None:
                low, high = min(low, self.seen[0]), max(high, self.seen[1])
            self.seen = (low, high)

    def result(self, rule: str, name: str) -> RuleResult:
        seen_min, seen_max = self.seen or (float("nan"), float("nan"))
        examples = ", ".join(f"{value:g}" for value in self.examples)
        message = f"{self.n_outside} values outside [{_bound(self.low)}, {_bound(self.high)}]"
        if self.n_outside:
            message += f" (e.g. {examples})"
        return RuleResult(
            rule,
            name,
            self.n_outside == 0,
            f"{message}; seen [{seen_min:g}, {seen_max:g}]",
            {
                "n_out_of_range": self.n_outside,
                "examples": examples,
                "min_seen": _json_float(seen_min),
                "max_seen": _json_float(seen_max),
                "min": _json_float(self.low),
                "max": _json_float(self.high),
            },
        )


def _bound(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"


def _categories_rule(name: str, column: ColumnSpec, counts: dict[str, int]) -> RuleResult:
    """The categories rule on a column's present values, counted by value (as text)."""
    if column.categories is None:
        return RuleResult(
            "categories", name, True, "no category list declared", {"n_distinct": len(counts)}
        )
    allowed = set(column.categories)
    unknown = {value: count for value, count in counts.items() if value not in allowed}
    # Most frequent first; ties in the order counted (one chunk: pandas' value_counts order).
    frequent = sorted(unknown.items(), key=lambda item: -item[1])
    n_unknown = sum(unknown.values())
    listed = ", ".join(f"{value!r} ({count})" for value, count in frequent[:MAX_EXAMPLES])
    return RuleResult(
        "categories",
        name,
        not unknown,
        f"{n_unknown} values outside the declared categories: {listed}"
        if n_unknown
        else "all values are declared categories",
        {"n_unknown": n_unknown, "n_distinct_unknown": len(unknown), "unknown": listed},
    )


def _keep_first(kept: list, values: Iterable) -> None:
    """Add to `kept` the values not in it yet, in order, until it holds MAX_EXAMPLES."""
    for value in values:
        if len(kept) >= MAX_EXAMPLES:
            return
        if value not in kept:
            kept.append(value)


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


def _json_float(value: float | None) -> float | str:
    # NaN is not JSON; "n/a" keeps figures serialisable and readable.
    if value is None or np.isnan(value):
        return "n/a"
    return float(value)
