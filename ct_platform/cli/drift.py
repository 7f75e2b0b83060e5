"""`ct drift REFERENCE CURRENT [--json]`: per-column and dataset drift between two data files.

Files are CSV (the spec's separator, optionally .gz) or Parquet; columns are typed by the
spec (sentinels and empty fields are missing), then compared with the same fast check the
`production_drift` asset runs (`ct_platform.monitoring.drift.detect_drift`). Both kinds of
file are streamed in batches into per-column summaries (`monitoring.sources`): memory stays
bounded however many rows they hold, and pandas is never imported.
REFERENCE may also be a saved reference profile (`.json`, `ReferenceProfile.save`), so the
training data need not be at hand.

Every column of CURRENT is listed with its status: its verdict; "invalid" when more than
`monitoring.max_invalid_share` of its values break the spec's contract (no verdict, what is
wrong instead); or why it was not tested (all missing, too few non-missing values, type
mismatch with the profile, dropped by the spec, the target, not in the spec). Below the
spec's sample-size minimums (`monitoring.min_window_rows` rows, `monitoring.min_column_values`
values per column) there is no verdict, and it says so.

Contract violations in CURRENT are listed apart from drift, per column, counted in the same
pass: values of a numeric column that are not numbers (with up to 5 examples as sent),
numbers too large for float64 and infinite values (in the model server's words: "overflow
to infinity: beyond float64 (±1.798e+308)", "infinite (not allowed)"), fractions in an `int`
column (the server refuses them: "expected an integer"), numbers outside the
spec's min/max (rule, count, lowest and highest seen, quoted as written: text `1e-400` reads
as 0 and is shown as `1e-400`), and values outside the spec's `categories` (the most
frequent named, with counts). Text reads as missing exactly where the server reads it so:
an empty field and "nan" in any case. A UTF-8 byte-order mark is ignored; a column named
twice in the header is refused by name (exit 2). JSON: `"violations": {column: {rows,
invalid, share, unparseable, examples, overflows, overflow_examples, infinite, fractional,
fractional_examples, out_of_range, rule, seen_min, seen_max, seen_as_sent,
unknown_categories, distinct_unknown_categories, most_frequent_unknown, message}}` (empty
when the data keeps the contract).

Ingest's completeness rule (`dataset.completeness_min`: the share of non-missing values, none
missing in a `nullable: false` column; a sentinel is an answer, not missing) is applied to
every feature column of CURRENT, counted in the same pass, with ingest's figures and words;
its rules on the time column and the target (`data.contract.TimeAndTargetRules`) to those
of the two CURRENT holds. Every rule is listed as ok, BROKEN or not checked (with why: the
column is absent, or the rule admits training batches, not compared files). JSON:
`"ingest_rules": {"checked": [{rule, column, passed, message, figures}], "not_checked":
[why]}`. REFERENCE is not held to them: it is data ingest admitted, or a profile. The time
column and the target are streamed for them in a second pass (memory: one chunk of them).

A column named like a spec column but for case or surrounding spaces ("Age", "age " for
"age") is refused with "did you mean" (exit 2), as the model server refuses it.

Exit status: 0 when there is a verdict (drift or not) and CURRENT keeps the contract; 4 when
there is a verdict but CURRENT has contract violations or breaks an ingest rule (listed); 3
when there is no dataset verdict (too little data, or no column testable: violations, if
any, listed too); 2 when the comparison could not run (bad file, missing column).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

EXIT_INSUFFICIENT_DATA = 3
EXIT_CONTRACT_VIOLATIONS = 4

# The heading of the ingest rules' listing (the table's last section before the verdict).
INGEST_RULES_HEADING = (
    "ingest's rules (completeness of every column, and the time column's and target's):"
)
# Ingest's whole-file rules (`data.contract`) that `ct drift` does not apply (why: the
# `not_checked` entry `_ingest_rules` writes).
WHOLE_FILE_RULES = "min_rows, columns, duplicates"

if TYPE_CHECKING:
    from ct_platform.data.contract import RuleResult
    from ct_platform.monitoring.results import DriftResult
    from ct_platform.monitoring.summaries import DataSummary
    from ct_platform.settings import DatasetSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reference", type=Path, help="reference data file, or a saved reference profile (.json)"
    )
    parser.add_argument("current", type=Path, help="current data file to compare")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"verdict", "reason", "columns": {name: {status, method, score, threshold, '
        'drift} or {status: "invalid" | "not tested", reason}}, "drift_share", "dataset_drift", '
        '"violations": {name: {rows, invalid, share, unparseable, examples, overflows, '
        "overflow_examples, infinite, fractional, fractional_examples, out_of_range, rule, "
        "seen_min, seen_max, seen_as_sent, "
        "unknown_categories, distinct_unknown_categories, "
        "most_frequent_unknown, message}}, "
        '"ingest_rules": {"checked": [{rule, column, passed, message, figures}], '
        '"not_checked": [why]}}; a tested column may carry a "note"',
    )


def run(args: argparse.Namespace) -> int:
    # Imported here so `ct --help` and other subcommands never pay for numpy/pyarrow.
    from ct_platform.cli.where import load_platform
    from ct_platform.monitoring.drift import SAMPLE_ROWS, ReferenceProfile, detect_drift
    from ct_platform.monitoring.sources import summarise_file

    try:
        spec = load_platform(reads_home=False).spec  # column definitions only: no state read
        dataset = spec.dataset
        if args.reference.suffix == ".json":
            reference = ReferenceProfile.load(args.reference)
        else:
            reference = ReferenceProfile.from_file(args.reference, dataset)
        current = summarise_file(args.current, dataset, SAMPLE_ROWS, reference)
        ingest = _ingest_rules(args.current, dataset, current)
        monitoring = spec.monitoring
        result = detect_drift(
            reference,
            current,
            dataset,
            drift_share_threshold=monitoring.drift_share_threshold,
            min_rows=monitoring.min_window_rows,
            min_column_values=monitoring.min_column_values,
            max_invalid_share=monitoring.max_invalid_share,
        )
    # Every complaint about the inputs is a ValueError (SpecError, BatchReadError,
    # MissingColumnsError, a malformed profile) or, for an unopenable profile, an OSError.
    except (OSError, ValueError) as exc:
        print(f"ct drift: {exc}", file=sys.stderr)
        return 2
    broken_rules = [rule for rule in ingest.checked if not rule.passed]
    if args.json:
        print(json.dumps({**result.to_dict(), "ingest_rules": ingest.to_dict()}))
    else:
        _print_table(result, monitoring.drift_share_threshold, ingest)
    if result.violations:
        broken = ", ".join(result.violations)
        print(f"ct drift: {args.current} breaks the spec's contract in: {broken}", file=sys.stderr)
    for rule in broken_rules:
        print(f"ct drift: {args.current}: {rule.describe()}", file=sys.stderr)
    if result.dataset_drift is None:
        print(f"ct drift: {result.insufficient}: no verdict", file=sys.stderr)
        return EXIT_INSUFFICIENT_DATA
    return EXIT_CONTRACT_VIOLATIONS if result.violations or broken_rules else 0


@dataclass
class IngestRules:
    """Ingest's rules (`data.contract`) beyond the feature columns, on CURRENT: those
    checked, and, for each rule not checked, why (so no "within the contract" is claimed
    for it)."""

    checked: list[RuleResult]
    not_checked: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"checked": [asdict(rule) for rule in self.checked], "not_checked": self.not_checked}


def _ingest_rules(path: Path, dataset: DatasetSpec, current: DataSummary) -> IngestRules:
    """Run ingest's completeness rule on CURRENT's (`path`, summarised as `current`) feature
    columns, from the missing values counted in the same pass, and its time-column and
    target rules on the ones CURRENT holds; say which were not checked and why."""
    from ct_platform.data.contract import TimeAndTargetRules, completeness_rule
    from ct_platform.monitoring.sources import column_chunks

    columns = current.other_columns
    checked = [
        completeness_rule(name, current.rows, current.missing.get(name, 0), spec.nullable, dataset)
        for name, spec in dataset.columns.items()
        if name in current.columns
    ]
    present = [name for name in (dataset.time_column, dataset.target) if name in columns]
    if present:  # streamed: the whole target of a 10M-row file held 900 MB as pandas reads it
        rules = TimeAndTargetRules(dataset, present)
        for chunk in column_chunks(path, dataset, present):
            rules.add(chunk)
        checked += rules.results()
    not_checked = [
        f"column '{name}', rules {rules}: the column is not in CURRENT"
        for name, rules in _rules_of_rule_columns(dataset).items()
        if name not in columns
    ]
    not_checked.append(
        f"{WHOLE_FILE_RULES}: rules for admitting a training batch, not for a compared file "
        "(the sample-size minimum is monitoring.min_window_rows; a compared file may carry "
        "other columns, such as a prediction log's; repeated rows are repeated traffic)"
    )
    return IngestRules(checked, not_checked)


def _rules_of_rule_columns(dataset: DatasetSpec) -> dict[str, str]:
    """The rules `TimeAndTargetRules` applies, by column, as ingest names them."""
    rules = {}
    if dataset.time_column is not None:
        rules[dataset.time_column] = "completeness, type"
    target_range = ", target_range" if dataset.target_rules is not None else ""
    rules[dataset.target] = f"completeness, target{target_range}"
    return rules


def _print_ingest_rules(ingest: IngestRules) -> None:
    print(INGEST_RULES_HEADING)
    for rule in ingest.checked:
        print(f"  {'ok' if rule.passed else 'BROKEN'}: {rule.describe()}")
    for why in ingest.not_checked:
        print(f"  not checked: {why}")


def _print_table(result: DriftResult, threshold: float, ingest: IngestRules) -> None:
    names = [*result.columns, *result.invalid, *result.not_tested]
    width = max(len("column"), *(len(name) for name in names))
    print(f"{'column':<{width}}  {'method':<13}  {'score':>10}  {'threshold':>9}  drift")
    for name, column in result.columns.items():
        verdict = "DRIFT" if column.drift else "-"
        print(
            f"{name:<{width}}  {column.method:<13}  {column.score:>10.4f}  "
            f"{column.threshold:>9.3g}  {verdict}"
        )
        if column.note:
            print(f"{'':<{width}}  ({column.note})")
    for name, why in result.invalid.items():
        print(f"{name:<{width}}  invalid: {why}")
    for name, why in result.not_tested.items():
        print(f"{name:<{width}}  not tested: {why}")
    if result.violations:
        print("contract violations (counted apart from drift):")
        for line in result.describe_violations():
            print(f"  {line}")
    _print_ingest_rules(ingest)
    tested = f"{len(result.columns)} of {len(names)} columns tested"
    if result.dataset_drift is None:
        print(f"dataset: no verdict, {result.insufficient} ({tested})")
        return
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    print(
        f"dataset: {verdict} ({result.n_drifted} of {len(result.columns)} columns drifted, "
        f"share {result.drift_share:.2f}, threshold {threshold:.2f}; {tested})"
    )
