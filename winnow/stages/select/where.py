"""A condition on a document column, shared by ``select.where`` and the band rule's ``require``.

Its own module so both config modules can import it (``config`` holds the band block, ``band_config``
the conditions it checks).
"""

from __future__ import annotations

import operator
from typing import Any, Literal

from pydantic import Field, model_validator

from winnow.core.config import Section


class WhereCondition(Section):
    """One condition on a document column (top level or in ``metadata``), e.g. overall_score == 5."""

    field: str = Field(..., min_length=1, description="Column name.")
    op: Literal["==", "!=", ">=", ">", "<=", "<", "in", "not_in"] = Field("==", description="Comparison.")
    value: float | int | str | bool | list[float | int | str | bool] = Field(
        ..., description="Right-hand side; a list for `in` / `not_in`."
    )

    @model_validator(mode="after")
    def _list_for_membership(self) -> WhereCondition:
        if (self.op in ("in", "not_in")) != isinstance(self.value, list):
            raise ValueError(f"`{self.op}` needs {'a list' if self.op in ('in', 'not_in') else 'a single value'}")
        return self

    def holds(self, value: Any) -> bool:
        """Whether a present value meets the condition; what a missing value means is the caller's rule.

        Numbers compare as numbers (a rating 5 equals 5.0), everything else as strings; the order
        comparisons raise ``TypeError``/``ValueError`` for a value that is not a number.
        """
        if self.op in ("in", "not_in"):
            inside = any(_equal(value, v) for v in self.value)  # type: ignore[union-attr]
            return inside if self.op == "in" else not inside
        if self.op in ("==", "!="):
            return _equal(value, self.value) == (self.op == "==")
        return bool(_ORDER[self.op](float(value), float(self.value)))  # type: ignore[arg-type]


_ORDER = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _equal(value: Any, target: Any) -> bool:
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(target, numbers) and not isinstance(target, bool):
        return float(value) == float(target)
    return str(value) == str(target)
