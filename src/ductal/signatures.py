"""Source-data verification, locking and electronic signatures of form records — all audited.

A record moves ``complete → verified`` (a monitor checked it against source documents), may be
signed by an investigator with a meaning (authorship, review, approval) after giving their password
again, and may be locked against change. Any later change of data through
:func:`ductal.forms.save_form` puts the record back to ``complete`` and voids its signatures,
naming the reason on each.

Passwords are hashed with Argon2id; :func:`reauthenticate` is the check an electronic signature
needs, and it is audited whether it succeeds or fails.
"""

from __future__ import annotations

import contextlib
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import audit
from ductal.errors import Conflict, NotAuthenticated, Problem, ValidationError
from ductal.models import AuditEntry, FormRecord, Signature, User, utcnow

MEANINGS = ("authorship", "review", "approval")
MIN_PASSWORD_LENGTH = 10
_DEFAULT_HASHER = PasswordHasher()


def check_password_strength(password: str) -> None:
    """Raise :class:`ValidationError` for a password too short or too plain to store."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(Problem("password", f"must be at least {MIN_PASSWORD_LENGTH} characters"))
    elif len(set(password)) < 4:
        problems.append(Problem("password", "uses too few different characters"))
    if len(password) > 1024:
        problems.append(Problem("password", "must be at most 1024 characters"))
    if problems:
        raise ValidationError("the password is too weak", problems=problems)


def hash_password(password: str, *, hasher: PasswordHasher | None = None) -> str:
    """Return the Argon2id hash of ``password`` (after checking its strength)."""
    check_password_strength(password)
    return (hasher or _DEFAULT_HASHER).hash(password)


def password_matches(user: User, password: str) -> bool:
    """Return True when ``password`` is the user's (never for an inactive or password-less user)."""
    stored = user.password_hash
    if not user.is_active or not stored:
        spend_password_time(password)
        return False
    try:
        return _DEFAULT_HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return _DEFAULT_HASHER.hash("not anyone's password")


def spend_password_time(password: str) -> None:
    """Take as long as checking a real password, so unknown usernames cannot be told apart."""
    # a login for an unknown user costs as much time as one for a known user
    with contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
        _DEFAULT_HASHER.verify(_dummy_hash(), password)


def set_password(
    session: Session,
    *,
    user: User,
    new_password: str,
    actor: str,
    hasher: PasswordHasher | None = None,
) -> None:
    """Store a new password hash for ``user``; the audit says it changed, never what to."""
    user.password_hash = hash_password(new_password, hasher=hasher)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="set_password",
        entity_type="user",
        entity_id=user.id,
        after={"username": user.username},
    )


class ReauthenticationFailed(NotAuthenticated):
    """The password given to confirm an action was wrong."""

    code = "reauthentication_failed"


def reauthenticate(user: User, password: str) -> None:
    """Check the signed-in user's password again; raise :class:`ReauthenticationFailed` if wrong.

    The failed attempt is not audited here because the caller's transaction is about to roll
    back: the caller records it with :func:`record_failed_reauthentication` in a new one.
    """
    if not password_matches(user, password):
        raise ReauthenticationFailed(
            "the password is not correct", problems=[Problem("password", "is not correct")]
        )


def record_failed_reauthentication(session: Session, *, user: User, purpose: str) -> None:
    """Append the audit entry of a failed re-authentication."""
    audit.record(
        session,
        actor=user.username,
        action="reauth_failed",
        entity_type="user",
        entity_id=user.id,
        after={"purpose": purpose},
    )


def _record_state(record: FormRecord) -> dict[str, Any]:
    return {"form": record.form_key, "instance": record.instance, "status": record.status}


def _audit(
    session: Session,
    record: FormRecord,
    *,
    actor: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    reason: str | None = None,
    entity_type: str = "form_record",
    entity_id: int | None = None,
) -> None:
    subject = record.subject
    audit.record(
        session,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id if entity_id is not None else record.id,
        before=before,
        after=after,
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )


def _set_status(record: FormRecord, status: str, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != record.version:
        raise Conflict(
            f"form {record.form_key} changed since you opened it (it is at version "
            f"{record.version}, you saw version {expected_version}); reload and try again"
        )
    record.status = status


def verify(
    session: Session, *, record: FormRecord, actor: str, expected_version: int | None = None
) -> FormRecord:
    """Mark a complete record as source-data verified."""
    if record.status != "complete":
        raise Conflict(
            f"form {record.form_key} is {record.status}; only a complete form can be verified"
        )
    audit.lock_chain(session)
    before = _record_state(record)
    _set_status(record, "verified", expected_version)
    session.flush()
    _audit(
        session, record, actor=actor, action="verify", before=before, after=_record_state(record)
    )
    return record


def live_signatures(session: Session, record: FormRecord) -> list[Signature]:
    """Return the record's signatures that have not been voided, oldest first."""
    return list(
        session.scalars(
            select(Signature)
            .where(Signature.form_record_id == record.id, Signature.voided_at.is_(None))
            .order_by(Signature.id)
        )
    )


def all_signatures(session: Session, record: FormRecord) -> list[Signature]:
    """Return every signature of the record, voided ones included, oldest first."""
    return list(
        session.scalars(
            select(Signature).where(Signature.form_record_id == record.id).order_by(Signature.id)
        )
    )


def sign(
    session: Session,
    *,
    record: FormRecord,
    signer: User,
    password: str,
    meaning: str,
    expected_version: int | None = None,
) -> Signature:
    """Sign a complete or verified record with ``meaning`` after checking the password again."""
    if meaning not in MEANINGS:
        raise ValidationError(
            "unknown meaning",
            problems=[Problem("meaning", f"must be one of: {', '.join(MEANINGS)}")],
        )
    if record.status not in ("complete", "verified", "signed"):
        raise Conflict(
            f"form {record.form_key} is {record.status}; only a complete form can be signed"
        )
    reauthenticate(signer, password)
    audit.lock_chain(session)
    before = _record_state(record)
    _set_status(record, "signed", expected_version)
    session.flush()
    signature = Signature(
        form_record_id=record.id,
        signer=signer.username,
        meaning=meaning,
        record_version=record.version,
    )
    session.add(signature)
    session.flush()
    _audit(
        session,
        record,
        actor=signer.username,
        action="sign",
        before=before,
        after={**_record_state(record), "meaning": meaning, "signer": signer.full_name},
        entity_type="signature",
        entity_id=signature.id,
    )
    return signature


def lock(
    session: Session, *, record: FormRecord, actor: str, expected_version: int | None = None
) -> FormRecord:
    """Lock a record against any change (data, verification or signature)."""
    if record.status in ("incomplete", "locked"):
        raise Conflict(f"form {record.form_key} is {record.status}; it cannot be locked")
    audit.lock_chain(session)
    before = _record_state(record)
    _set_status(record, "locked", expected_version)
    session.flush()
    _audit(session, record, actor=actor, action="lock", before=before, after=_record_state(record))
    return record


def unlock(session: Session, *, record: FormRecord, actor: str, reason: str) -> FormRecord:
    """Unlock a record, giving it back the status it had when it was locked."""
    if record.status != "locked":
        raise Conflict(f"form {record.form_key} is {record.status}, not locked")
    if not reason.strip():
        raise ValidationError("a reason is required", problems=[Problem("reason", "is required")])
    audit.lock_chain(session)
    last_lock = session.scalar(
        select(AuditEntry)
        .where(
            AuditEntry.entity_type == "form_record",
            AuditEntry.entity_id == str(record.id),
            AuditEntry.action == "lock",
        )
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    previous = "complete"
    if last_lock is not None and last_lock.before:
        previous = str(last_lock.before.get("status") or "complete")
    if previous == "signed" and not live_signatures(session, record):
        previous = "complete"
    before = _record_state(record)
    record.status = previous
    record.updated_at = utcnow()
    session.flush()
    _audit(
        session,
        record,
        actor=actor,
        action="unlock",
        before=before,
        after=_record_state(record),
        reason=reason,
    )
    return record
