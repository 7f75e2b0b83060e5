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

Exit status: 0 when there is a verdict (drift or not) and CURRENT keeps the contract; 4 when
there is a verdict but CURRENT has contract violations (listed); 3 when there is no dataset
verdict (too little data, or no column testable: violations, if any, listed too); 2 when
the comparison could not run (bad file, missing column).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

EXIT_INSUFFICIENT_DATA = 3
EXIT_CONTRACT_VIOLATIONS = 4

if TYPE_CHECKING:
    from ct_platform.monitoring.results import DriftResult


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
        "most_frequent_unknown, message}}}",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here so `ct --help` and other subcommands never pay for numpy/pyarrow.
    from ct_platform.monitoring.drift import SAMPLE_ROWS, ReferenceProfile, detect_drift
    from ct_platform.monitoring.sources import summarise_file
    from ct_platform.settings import load_spec

    try:
        spec = load_spec()
        dataset = spec.dataset
        if args.reference.suffix == ".json":
            reference = ReferenceProfile.load(args.reference)
        else:
            reference = ReferenceProfile.from_file(args.reference, dataset)
        current = summarise_file(args.current, dataset, SAMPLE_ROWS, reference)
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
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_table(result, monitoring.drift_share_threshold)
    if result.violations:
        broken = ", ".join(result.violations)
        print(f"ct drift: {args.current} breaks the spec's contract in: {broken}", file=sys.stderr)
    if result.dataset_drift is None:
        print(f"ct drift: {result.insufficient}: no verdict", file=sys.stderr)
        return EXIT_INSUFFICIENT_DATA
    return EXIT_CONTRACT_VIOLATIONS if result.violations else 0


def _print_table(result: DriftResult, threshold: float) -> None:
    names = [*result.columns, *result.invalid, *result.not_tested]
    width = max(len("column"), *(len(name) for name in names))
    print(f"{'column':<{width}}  {'method':<13}  {'score':>10}  {'threshold':>9}  drift")
    for name, column in result.columns.items():
        verdict = "DRIFT" if column.drift else "-"
        print(
            f"{name:<{width}}  {column.method:<13}  {column.score:>10.4f}  "
            f"{column.threshold:>9.3g}  {verdict}"
        )
    for name, why in result.invalid.items():
        print(f"{name:<{width}}  invalid: {why}")
    for name, why in result.not_tested.items():
        print(f"{name:<{width}}  not tested: {why}")
    if result.violations:
        print("contract violations (counted apart from drift):")
        for line in result.describe_violations():
            print(f"  {line}")
    tested = f"{len(result.columns)} of {len(names)} columns tested"
    if result.dataset_drift is None:
        print(f"dataset: no verdict, {result.insufficient} ({tested})")
        return
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    print(
        f"dataset: {verdict} ({result.n_drifted} of {len(result.columns)} columns drifted, "
        f"share {result.drift_share:.2f}, threshold {threshold:.2f}; {tested})"
    )
