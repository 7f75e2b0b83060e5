"""One table of `age` values (bank spec: `int`, min 17, max 100) and how each is read.

The model server (every protocol family) and `ct drift` must agree on each: accepted as a
number, or refused with the same status and words, quoting the value as sent, and counted
by `ct drift` under the violation kind that says the same thing. Used by
`serving/test_value_agreement.py` (the server, over real HTTP) and
`monitoring/test_drift_contract.py` (`ct drift` on a CSV holding every text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

OVERFLOW = "overflows to infinity: beyond float64 (±1.798e+308)"


@dataclass(frozen=True)
class AgeCase:
    text: str  # as a CSV field / V2 BYTES element
    json: str | None  # as a JSON literal (None: JSON cannot say it)
    scores_as: int | None = None  # accepted: scores like this age
    status: int = 0  # refused: the status, the problem ({} = the value as sent)...
    problem: str = ""
    drift_kind: str = ""  # ...and what `ct drift` counts it as

    def message(self, shown: str) -> str:
        return f"row 0, column 'age': {self.problem.format(shown)}"

    def text_message(self) -> str:
        """The refusal in a text protocol: a text value is quoted as a JSON string."""
        return self.message(json.dumps(self.text, ensure_ascii=False))


FRACTION = dict(status=400, problem="expected an integer, got {}", drift_kind="fractional")
BELOW = dict(status=422, problem="{} is below the contract's min 17", drift_kind="out_of_range")
ABOVE = dict(status=422, problem="{} is above the contract's max 100", drift_kind="out_of_range")
OVERFLOWS = dict(status=400, problem="{} " + OVERFLOW, drift_kind="overflows")
INFINITE = dict(status=400, problem="infinite value {} is not allowed", drift_kind="infinite")
NOT_A_NUMBER = dict(status=400, problem="expected a number, got {}", drift_kind="unparseable")

AGE_CASES: list[AgeCase] = [
    AgeCase("30", "30", scores_as=30),
    AgeCase("30.0", "30.0", scores_as=30),
    AgeCase("3.0e1", "3.0e1", scores_as=30),
    AgeCase(" 30 ", None, scores_as=30),
    AgeCase("+30", None, scores_as=30),
    AgeCase("30.", None, scores_as=30),
    AgeCase("30.5", "30.5", **FRACTION),
    AgeCase("30.50", "30.50", **FRACTION),
    AgeCase("1e-400", "1e-400", **BELOW),  # underflows to 0: below min, quoted as sent
    AgeCase("-0", "-0", **BELOW),
    AgeCase("500", "500", **ABOVE),
    AgeCase("1e999", "1e999", **OVERFLOWS),
    AgeCase("inf", "Infinity", **INFINITE),
    AgeCase("abc", None, **NOT_A_NUMBER),
    AgeCase("4_1", None, **NOT_A_NUMBER),
    AgeCase("0x1E", None, **NOT_A_NUMBER),
    AgeCase("\uff13\uff10", None, **NOT_A_NUMBER),  # fullwidth digits
]  # fmt: skip
