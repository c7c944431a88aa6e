"""Live randomisation: concealed allocation lists, minimisation, assignment and unblinding.

The service functions live in :mod:`ductal.randomisation.service`; the pure list generation and
minimisation in :mod:`~ductal.randomisation.lists` and :mod:`~ductal.randomisation.minimisation`.
"""

from ductal.randomisation.service import (
    Assignment,
    ListSummary,
    SlotRow,
    close_arm,
    closed_arms,
    export_list,
    generate_lists,
    list_summaries,
    open_arms,
    randomise,
    unblind,
)

__all__ = [
    "Assignment",
    "ListSummary",
    "SlotRow",
    "close_arm",
    "closed_arms",
    "export_list",
    "generate_lists",
    "list_summaries",
    "open_arms",
    "randomise",
    "unblind",
]
