"""Fuzzing the REST API from its OpenAPI document with schemathesis (hypothesis underneath).

Every operation is called with generated requests by an administrator's token: no response may
be a server error (5xx) and every response must match the schema the document declares. The
bounded run here uses a fixed number of examples per operation (``DUCTAL_FUZZ_EXAMPLES``, default
10); docs/validation.md gives the longer run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.trust.access_matrix import World, temporary_world

EXAMPLES = int(os.environ.get("DUCTAL_FUZZ_EXAMPLES", "10"))
# Defects this fuzzing found that are reported, not yet fixed; any other failure fails the test.
# (It found integer path ids beyond 2**63 reaching the driver as a 500; ids are now bounded.)
KNOWN_DEFECTS: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def fuzz_world() -> Iterator[World]:
    with temporary_world() as w:
        yield w


def _fuzz(operation: Any, token: str) -> str | None:
    """Return the first failure found on ``operation``, or None."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    try:
        run()
    except Exception as exc:  # report every operation's failure, not only the first one
        return f"{operation.method.upper()} {operation.path}: {type(exc).__name__}: {exc}"[:2000]
    return None


@pytest.mark.slow
def test_api_conforms_and_never_fails(fuzz_world: World) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzz_world.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    token = fuzz_world.tokens["admin_own"]
    failures = [f for op in operations if (f := _fuzz(op, token)) is not None]
    unknown = [f for f in failures if not any(k in f for k in KNOWN_DEFECTS)]
    assert unknown == [], "\n\n".join(unknown)
