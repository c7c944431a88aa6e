"""Domain exceptions: each carries an HTTP status and a stable code; edges turn them into text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field of some input."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class DuctalError(Exception):
    """Base of every error ductal reports to a user."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[Problem] = list(problems or [])

    def lines(self) -> list[str]:
        """Return the message followed by one line per problem."""
        return [self.message, *(f"  - {p}" for p in self.problems)]


class ValidationError(DuctalError):
    """Input broke one or more rules; ``problems`` names each field."""

    status = 422
    code = "validation_error"


class ProtocolError(ValidationError):
    """A protocol definition is malformed."""

    code = "protocol_error"


class NotFound(DuctalError):
    status = 404
    code = "not_found"


class Conflict(DuctalError):
    """The stored data changed underneath the caller, or a unique value is taken."""

    status = 409
    code = "conflict"


class PermissionDenied(DuctalError):
    status = 403
    code = "forbidden"


class NotAuthenticated(DuctalError):
    status = 401
    code = "not_authenticated"


class ConfigError(DuctalError):
    """Settings are missing, insecure, or point at something unreachable."""

    status = 500
    code = "configuration_error"


class DatabaseUnavailable(ConfigError):
    status = 503
    code = "database_unavailable"


class AuditError(DuctalError):
    """The audit trail is broken or could not be written."""

    status = 500
    code = "audit_error"
