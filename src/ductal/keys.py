"""Vault key rotation: re-encrypt every stored identity under a new key in one transaction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import audit
from ductal.errors import ConfigError
from ductal.models import Identity
from ductal.vault import Vault


def new_vault_key() -> str:
    """Return a freshly generated Fernet key."""
    return Fernet.generate_key().decode()


def key_fingerprint(key: str) -> str:
    """Return a short one-way fingerprint of ``key`` that can be logged to tell keys apart."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate_identities` did."""

    identities: int
    old_fingerprint: str
    new_fingerprint: str


def rotate_identities(session: Session, *, current_key: str, new_key: str, actor: str) -> Rotation:
    """Re-encrypt every identity row under ``new_key`` in the caller's transaction.

    Every row must decrypt with ``current_key`` (or already with ``new_key``, so that a rotation
    interrupted before the operator swapped keys can be run again); otherwise nothing changes.
    The audit entry names the field and the key fingerprints, never a value or a key.
    """
    if new_key == current_key:
        raise ConfigError("the new vault key is the current key; generate a new one")
    vault = Vault(new_key, current_key)  # the first key encrypts, both decrypt
    audit.lock_chain(session)
    rows = list(session.scalars(select(Identity).order_by(Identity.id).with_for_update()))
    for row in rows:
        try:
            row.ciphertext = vault.rotate(row.ciphertext)
        except InvalidToken:
            raise ConfigError(
                f"identity record {row.id} does not decrypt with the current vault key; "
                "nothing was re-encrypted"
            ) from None
    session.flush()
    rotation = Rotation(len(rows), key_fingerprint(current_key), key_fingerprint(new_key))
    audit.record(
        session,
        actor=actor,
        action="rotate_key",
        entity_type="vault",
        entity_id="identities",
        before={"key_fingerprint": rotation.old_fingerprint},
        after={
            "key_fingerprint": rotation.new_fingerprint,
            "fields": ["ciphertext"],
            "identities": rotation.identities,
        },
        reason="vault key rotation",
    )
    return rotation
