"""What an import found: every problem with where it is (row or line), and what was left out.

Importers collect :class:`Issue` objects instead of stopping at the first fault, so a data
manager sees every problem of a file at once. Errors block the import (unless the caller asked
for a partial import); warnings say what could not be mapped exactly and are always reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ductal.errors import Problem, ValidationError

__all__ = ["ImportReport", "Issue"]


@dataclass(frozen=True)
class Issue:
    """One problem: where (``row 12``, ``line 40``), which item, what is wrong."""

    where: str
    item: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        item = f" {self.item}" if self.item else ""
        return f"{self.where}{item}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {
            "where": self.where,
            "item": self.item,
            "message": self.message,
            "severity": self.severity,
        }


def _position(issue: Issue) -> tuple[int, str]:
    number = issue.where.rsplit(" ", 1)[-1]
    return (int(number) if number.isdigit() else 0, issue.item)


@dataclass
class ImportReport:
    """The outcome of an import: issues found and what was (or would be) imported."""

    source: str
    issues: list[Issue] = field(default_factory=list)
    imported: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def error(self, where: str, item: str, message: str) -> None:
        self.issues.append(Issue(where, item, message, "error"))

    def warning(self, where: str, item: str, message: str) -> None:
        self.issues.append(Issue(where, item, message, "warning"))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self, what: str) -> None:
        """Raise a ValidationError listing every error (each as ``where item``: message)."""
        if self.errors:
            raise ValidationError(
                f"{self.source}: {len(self.errors)} problem(s); nothing was imported ({what})",
                problems=[
                    Problem(f"{i.where} {i.item}".strip(), i.message)
                    for i in sorted(self.errors, key=_position)
                ],
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "imported": dict(self.imported),
            "skipped": list(self.skipped),
            "errors": [i.to_json() for i in self.errors],
            "warnings": [i.to_json() for i in self.warnings],
        }
