"""How a value written as text (a CSV field, a V2 BYTES element) reads: missing, a number, a
category. The one definition ingest (`data.reader`, `data.contract`), `ct drift`
(`monitoring.sources`) and the model server (`serving.schema`) share, so one row gets one
verdict wherever it arrives. Plain Python (the server imports it; no pandas here).

- Missing: the text, stripped of surrounding whitespace and lower-cased, is one of
  `MISSING_TEXT`: the empty field, and the spellings Python's `float()` reads as NaN
  (`nan`, `NaN`, ` -NaN `...), in every column, categorical ones included. Nothing else is
  missing: `NA`, `N/A`, `null`, `None`, `-` are values (not a number in a numeric column; a
  category, declared or not, in a categorical one). In JSON, `null` (and the `NaN` literal)
  are missing; a JSON *string* is text only in a text protocol.
- A number: the text, stripped, is a plain ASCII decimal literal (`NUMBER_TEXT`: `41`,
  `-0.5`, `.5`, `1e-3`) or infinity spelled out (`inf`, `-Infinity`, refused later as
  infinite). `1_000`, non-ASCII digits, `0x10`, `1,5` are not numbers. A literal beyond
  float64 (`1e999`) reads as infinite: an overflow (`is_overflow`), not an infinity.
- A category: the text as sent (not stripped); missing text as above.
"""

from __future__ import annotations

import math
import re

MISSING_TEXT = frozenset({"", "nan", "+nan", "-nan"})
# Regular expressions as text (Python's `re` and Arrow's RE2 read them alike).
NUMBER_TEXT = r"(?i)^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity)$"
INFINITY_TEXT = r"(?i)^[+-]?(inf|infinity)$"
_NUMBER = re.compile(NUMBER_TEXT)
_INFINITY = re.compile(INFINITY_TEXT)


def is_missing_text(value: object) -> bool:
    """Text meaning "missing" (`MISSING_TEXT`, stripped, any case); a non-str never is."""
    return isinstance(value, str) and value.strip().lower() in MISSING_TEXT


def text_number(text: str) -> float | None:
    """The number `text` spells (float64; surrounding whitespace allowed), or None when it
    is not a number by `NUMBER_TEXT`. Missing text is not a number: check it first."""
    stripped = text.strip()
    return float(stripped) if _NUMBER.match(stripped) else None


def is_overflow(text: str, number: float) -> bool:
    """`number`, read from `text`, is infinite only because the literal is beyond float64."""
    return math.isinf(number) and not _INFINITY.match(text.strip())
