"""Sign-in, browser sessions, API tokens and login throttling — every login and failure audited.

Browser sessions live in the database (so every worker sees a sign-out and the idle timeout at
once); the cookie carries a random secret and the table keeps only its SHA-256. API tokens are
stored the same way. CSRF uses a per-session synchroniser token; the login form, which has no
session yet, uses a token bound to a pre-session cookie by an HMAC of the secret key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session

from ductal import audit, forms, records, signatures
from ductal.errors import DuctalError, NotAuthenticated, Problem, ValidationError
from ductal.models import Membership, Subject, User, utcnow
from ductal.records import SubjectFacts
from ductal.web.access import Principal
from ductal.web.store import ApiToken, LoginAttempt, WebSession

TOKEN_PREFIX = "dtl_"
LANGUAGES = ("en", "zh-Hans")


class TooManyAttempts(DuctalError):
    status = 429
    code = "too_many_attempts"


@dataclass(frozen=True)
class AuthPolicy:
    """How long sessions last and how many failed logins are tolerated."""

    idle_minutes: int = 30
    absolute_hours: int = 12
    max_failures_per_user: int = 5
    max_failures_per_address: int = 30
    failure_window_minutes: int = 15


def digest(secret: str) -> str:
    """Return the SHA-256 hex digest under which a session or token secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def login_csrf(secret_key: str, pre_session: str) -> str:
    """Return the CSRF token of the login form for a pre-session cookie value."""
    return hmac.new(secret_key.encode(), f"login:{pre_session}".encode(), "sha256").hexdigest()


def _load_roles(session: Session, user_id: int) -> dict[int, set[str]]:
    roles: dict[int, set[str]] = {}
    for site_id, role in session.execute(
        select(Membership.site_id, Membership.role).where(Membership.user_id == user_id)
    ):
        roles.setdefault(site_id, set()).add(role)
    return roles


def principal_of(session: Session, user: User, *, via: str) -> Principal:
    """Return the principal of ``user`` with their roles loaded."""
    return Principal(
        user_id=user.id,
        username=user.username,
        full_name=user.full_name,
        language=user.language if user.language in LANGUAGES else "en",
        roles=_load_roles(session, user.id),
        via=via,
    )


def _recent_failures(session: Session, column: Any, value: str, since: dt.datetime) -> int:
    stmt = (
        select(func.count())
        .select_from(LoginAttempt)
        .where(
            column == value,
            LoginAttempt.succeeded.is_(False),
            LoginAttempt.attempted_at >= since,
        )
    )
    return int(session.scalar(stmt) or 0)


def check_throttle(session: Session, *, username: str, address: str, policy: AuthPolicy) -> None:
    """Raise :class:`TooManyAttempts` after too many recent failures for the user or address."""
    since = utcnow() - dt.timedelta(minutes=policy.failure_window_minutes)
    by_user = _recent_failures(session, LoginAttempt.username, username, since)
    by_address = _recent_failures(session, LoginAttempt.address, address, since)
    if by_user >= policy.max_failures_per_user or by_address >= policy.max_failures_per_address:
        raise TooManyAttempts(
            f"too many failed sign-in attempts; try again in {policy.failure_window_minutes} "
            "minutes or ask an administrator"
        )


def record_failure(session: Session, *, username: str, address: str, why: str) -> None:
    """Store and audit a failed sign-in (the caller commits it even though sign-in failed)."""
    session.add(LoginAttempt(username=username[:64], address=address[:64], succeeded=False))
    audit.record(
        session,
        actor=username[:64] or "anonymous",
        action="login_failed",
        entity_type="user",
        entity_id=username[:64] or "-",
        after={"address": address[:64], "why": why},
    )


def authenticate(
    session: Session, *, username: str, password: str, address: str, policy: AuthPolicy
) -> User:
    """Return the user whose credentials these are; raise :class:`NotAuthenticated` otherwise.

    A failure is not recorded here (the caller's transaction rolls back on the error): callers
    call :func:`record_failure` in a transaction of its own.
    """
    username = username.strip().lower()[:64]
    check_throttle(session, username=username, address=address, policy=policy)
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        signatures.spend_password_time(password)
        raise NotAuthenticated("wrong username or password")
    if not signatures.password_matches(user, password):
        raise NotAuthenticated("wrong username or password")
    return user


def start_session(session: Session, *, user: User, address: str) -> tuple[str, WebSession]:
    """Open a browser session for ``user``; return the cookie secret and the stored session."""
    secret = secrets.token_urlsafe(32)
    row = WebSession(id=digest(secret), user_id=user.id, csrf_token=secrets.token_urlsafe(32))
    session.add(row)
    session.add(LoginAttempt(username=user.username, address=address[:64], succeeded=True))
    audit.record(
        session,
        actor=user.username,
        action="login",
        entity_type="user",
        entity_id=user.id,
        after={"address": address[:64]},
    )
    return secret, row


def end_session(session: Session, *, secret: str, actor: str, why: str = "logout") -> None:
    """End the browser session whose cookie secret is ``secret`` (idempotent)."""
    row = session.get(WebSession, digest(secret))
    if row is None or row.ended_at is not None:
        return
    row.ended_at = utcnow()
    audit.record(
        session, actor=actor, action=why, entity_type="user", entity_id=row.user_id, after=None
    )


class SessionExpired(NotAuthenticated):
    code = "session_expired"


def session_principal(
    session: Session, *, secret: str, policy: AuthPolicy, touch_after_s: int = 60
) -> Principal:
    """Return the principal of a live browser session; raise when it is unknown or expired."""
    row = session.get(WebSession, digest(secret))
    if row is None or row.ended_at is not None:
        raise NotAuthenticated("please sign in")
    now = utcnow()
    idle = now - row.last_seen_at > dt.timedelta(minutes=policy.idle_minutes)
    old = now - row.created_at > dt.timedelta(hours=policy.absolute_hours)
    user = session.get(User, row.user_id)
    if idle or old or user is None or not user.is_active:
        # nothing is written: the request's transaction rolls back on this error, and an
        # expired row refuses every later request all the same
        raise SessionExpired("your session has expired; please sign in again")
    if (now - row.last_seen_at).total_seconds() > touch_after_s:
        row.last_seen_at = now
    principal = principal_of(session, user, via="session")
    principal.csrf_token = row.csrf_token
    principal.session_id = row.id
    return principal


def create_token(
    session: Session, *, user: User, name: str, actor: str, days: int | None = 365
) -> str:
    """Create an API token for ``user`` and return it (shown once; only its hash is kept)."""
    if not name.strip() or len(name) > 100:
        raise ValidationError("bad token name", problems=[Problem("name", "1 to 100 characters")])
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(days=days) if days else None
    row = ApiToken(
        user_id=user.id, name=name.strip(), token_hash=digest(secret), expires_at=expires
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="create_token",
        entity_type="api_token",
        entity_id=row.id,
        after={"user": user.username, "name": row.name, "expires_at": expires},
    )
    return secret


def revoke_token(session: Session, *, token: ApiToken, actor: str) -> None:
    """Revoke an API token."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(
            session,
            actor=actor,
            action="revoke_token",
            entity_type="api_token",
            entity_id=token.id,
            before={"name": token.name},
        )


def token_principal(session: Session, *, secret: str) -> Principal:
    """Return the principal of a bearer token; raise :class:`NotAuthenticated` when invalid.

    One query reads the token, its user and the user's memberships together: scripts call the
    API often, and this is on every request.
    """
    rows = session.connection().execute(_TOKEN_PRINCIPAL, {"token_hash": digest(secret)}).all()
    return _token_principal(rows)


def token_principal_and_subject(
    session: Session, *, secret: str, study_id: str
) -> tuple[Principal, SubjectFacts | None]:
    """Return the principal of a bearer token and the facts of subject ``study_id`` (or None).

    One statement reads both (on PostgreSQL it also takes the subject's save lock, see
    :func:`ductal.forms.subject_lock_column`); the subject is only looked at once the token
    has been accepted.
    """
    params = {"token_hash": digest(secret), "study_id": study_id}
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    stmt = _TOKEN_PRINCIPAL_SUBJECT_LOCKED if postgres else _TOKEN_PRINCIPAL_AND_SUBJECT
    rows = conn.execute(stmt, params).all()
    principal = _token_principal(rows)
    facts = records.facts_from_row(session, rows[0])
    if postgres and facts is not None:
        forms.note_subject_locked(session, facts.id)
    return principal, facts


def _token_principal(rows: Sequence[Row[*tuple[Any, ...]]]) -> Principal:
    if not rows:
        raise NotAuthenticated("the API token is not valid")
    first = rows[0]
    now = utcnow()
    if first.revoked_at is not None or (first.expires_at is not None and first.expires_at < now):
        raise NotAuthenticated("the API token was revoked or has expired")
    if not first.is_active:
        raise NotAuthenticated("the account of this API token is disabled")
    roles: dict[int, set[str]] = {}
    for row in rows:
        if row.site_id is not None:
            roles.setdefault(row.site_id, set()).add(row.role)
    return Principal(
        user_id=first.user_id,
        username=first.username,
        full_name=first.full_name,
        language=first.language if first.language in LANGUAGES else "en",
        roles=roles,
        via="token",
    )


# built once: the columns only (no ORM objects), and no statement construction per request
_TOKEN_PRINCIPAL = (
    select(
        ApiToken.revoked_at,
        ApiToken.expires_at,
        User.id.label("user_id"),
        User.username,
        User.full_name,
        User.language,
        User.is_active,
        Membership.site_id,
        Membership.role,
    )
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(Membership, Membership.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)
_TOKEN_PRINCIPAL_AND_SUBJECT = records.join_facts(_TOKEN_PRINCIPAL)
# PostgreSQL: the subject's save lock too (one round trip fewer for the API's form save)
_TOKEN_PRINCIPAL_SUBJECT_LOCKED = _TOKEN_PRINCIPAL_AND_SUBJECT.add_columns(
    forms.subject_lock_column(Subject.id)
)


def set_language(session: Session, *, user: User, language: str) -> None:
    """Change the user's interface language (``en`` or ``zh-Hans``)."""
    if language not in LANGUAGES:
        raise ValidationError(
            "unknown language", problems=[Problem("language", f"one of: {', '.join(LANGUAGES)}")]
        )
    if user.language == language:
        return
    before = user.language
    user.language = language
    audit.record(
        session,
        actor=user.username,
        action="set_language",
        entity_type="user",
        entity_id=user.id,
        before={"language": before},
        after={"language": language},
    )


def change_password(session: Session, *, user: User, current: str, new: str, repeat: str) -> None:
    """Change one's own password after checking the current one."""
    problems = []
    if not signatures.password_matches(user, current):
        problems.append(Problem("current_password", "is not correct"))
    if new != repeat:
        problems.append(Problem("repeat_password", "does not match the new password"))
    if problems:
        raise ValidationError("the password was not changed", problems=problems)
    signatures.set_password(session, user=user, new_password=new, actor=user.username)
