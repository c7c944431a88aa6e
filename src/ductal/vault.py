"""The identity vault: direct identifiers encrypted with a key kept outside the database."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ductal.errors import ConfigError, Problem, ValidationError

IDENTITY_FIELDS = ("name", "hospital_record_number", "phone", "date_of_birth")


class Vault:
    """Encrypts and decrypts identity records; accepts older keys so keys can be rotated."""

    def __init__(self, key: str, *old_keys: str) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in (key, *old_keys)])
        except (ValueError, TypeError) as exc:
            raise ConfigError("vault key: not a valid Fernet key") from exc

    def encrypt(self, identity: dict[str, Any]) -> bytes:
        """Return the ciphertext of ``identity`` after checking its fields."""
        unknown = sorted(set(identity) - set(IDENTITY_FIELDS))
        if unknown:
            raise ValidationError(
                "unknown identity fields",
                problems=[Problem(k, "is not an identity field") for k in unknown],
            )
        blob = json.dumps({k: v for k, v in identity.items() if v not in (None, "")})
        return self._fernet.encrypt(blob.encode())

    def decrypt(self, ciphertext: bytes) -> dict[str, Any]:
        """Return the identity stored in ``ciphertext``."""
        try:
            return dict(json.loads(self._fernet.decrypt(ciphertext)))
        except InvalidToken as exc:
            raise ConfigError(
                "cannot decrypt an identity record: DUCTAL_VAULT_KEY is not the key it was "
                "encrypted with"
            ) from exc

    def rotate(self, ciphertext: bytes) -> bytes:
        """Return ``ciphertext`` re-encrypted under the newest key."""
        return self._fernet.rotate(ciphertext)
