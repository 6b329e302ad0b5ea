"""A condition on a document column, shared by ``select.where`` and the band rule's ``require``.

Its own module so both config modules can import it (``config`` holds the band block, ``band_config``
the conditions it checks).
"""

from __future__ import annotations

from typing import Literal

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
