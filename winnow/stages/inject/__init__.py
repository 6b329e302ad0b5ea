"""The inject stage: Copyright Traps planted in kept documents, the trap ledger and the membership test.

Cores only (Beam-free); docs/copyright-traps.md describes the method and winnow's choices.
"""

from winnow.stages.inject.membership import membership_table, traps_membership_report
from winnow.stages.inject.traps import (
    INJECTED_COLUMN,
    InjectionPlan,
    Trap,
    TrapDocuments,
    assign_roles,
    generate_traps,
    inject,
    ledger_table,
    plan_injection,
)

__all__ = [
    "INJECTED_COLUMN",
    "InjectionPlan",
    "Trap",
    "TrapDocuments",
    "assign_roles",
    "generate_traps",
    "inject",
    "ledger_table",
    "membership_table",
    "plan_injection",
    "traps_membership_report",
]
