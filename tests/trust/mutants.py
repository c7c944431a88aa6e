"""Deliberate breakages, to show each trust test fails when its property is broken.

A pytest plugin, used only by hand:

    DUCTAL_MUTANT=tamper .venv/bin/pytest -p tests.trust.mutants tests/trust/test_tamper.py

must FAIL. Mutants: ``tamper`` (the audit digest ignores the reason), ``checksum`` (every file
gets the same SHA-256), ``rotate`` (key rotation re-encrypts nothing), ``vault`` (identities
stored as plain JSON), ``site`` (a role at any site admits to another site's objects),
``identity`` (statisticians may read identities). Without ``DUCTAL_MUTANT`` nothing changes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def _tamper() -> None:
    from ductal import audit

    original = audit.entry_digest

    def entry_digest(entry: Any) -> str:
        saved = entry.reason
        try:
            entry.reason = None
            return original(entry)
        finally:
            entry.reason = saved

    audit.entry_digest = entry_digest  # type: ignore[assignment]


def _checksum() -> None:
    from ductal import backup

    backup.file_sha256 = lambda path: "0" * 64  # type: ignore[assignment]


def _rotate() -> None:
    from ductal.vault import Vault

    Vault.rotate = lambda self, ciphertext: ciphertext  # type: ignore[method-assign]


def _vault() -> None:
    from ductal.vault import Vault

    Vault.encrypt = lambda self, identity: json.dumps(identity).encode()  # type: ignore[method-assign]
    Vault.decrypt = lambda self, ciphertext: json.loads(ciphertext)  # type: ignore[method-assign]


def _site() -> None:
    from ductal.errors import PermissionDenied
    from ductal.web import deps

    def check(principal: Any, site_id: int, permission: str, missing: str) -> None:
        if not principal.can(permission):  # the object's site is no longer looked at
            raise PermissionDenied("refused")

    deps._check = check


def _identity() -> None:
    from ductal.web.access import PERMISSIONS

    PERMISSIONS["identity"] = frozenset({"admin", "statistician"})


MUTANTS = {
    "tamper": _tamper,
    "checksum": _checksum,
    "rotate": _rotate,
    "vault": _vault,
    "site": _site,
    "identity": _identity,
}


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get("DUCTAL_MUTANT", "").strip()
    if name:
        MUTANTS[name]()
