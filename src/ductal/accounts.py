"""Sites, users and memberships: who may work where, in which role. Every change is audited."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import audit
from ductal.errors import Conflict, NotFound, Problem, ValidationError
from ductal.models import ROLES, Membership, Site, User


def create_site(
    session: Session, *, code: str, name: str, actor: str, contact_phone: str | None = None
) -> Site:
    """Create and return a site; ``code`` must be new."""
    code = code.strip().upper()
    if not code or not code.replace("-", "").isalnum():
        raise ValidationError("bad site", problems=[Problem("code", "letters, digits and '-'")])
    if session.scalar(select(Site).where(Site.code == code)) is not None:
        raise Conflict(f"site {code!r} already exists")
    site = Site(code=code, name=name.strip(), contact_phone=contact_phone)
    session.add(site)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="create",
        entity_type="site",
        entity_id=site.id,
        after={"code": code, "name": site.name, "contact_phone": contact_phone},
        site_id=site.id,
    )
    return site


def get_site(session: Session, code: str) -> Site:
    """Return the site with ``code``."""
    site = session.scalar(select(Site).where(Site.code == code.strip().upper()))
    if site is None:
        raise NotFound(f"no site {code!r}")
    return site


def create_user(
    session: Session,
    *,
    username: str,
    full_name: str,
    actor: str,
    password_hash: str | None = None,
    email: str | None = None,
    language: str = "en",
) -> User:
    """Create and return a user; ``username`` must be new."""
    username = username.strip().lower()
    if not username or not username.replace("_", "").replace(".", "").isalnum():
        raise ValidationError(
            "bad user", problems=[Problem("username", "letters, digits, '.' and '_' only")]
        )
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        full_name=full_name,
        password_hash=password_hash,
        email=email,
        language=language,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="create",
        entity_type="user",
        entity_id=user.id,
        after={"username": username, "full_name": full_name, "language": language},
    )
    return user


def get_user(session: Session, username: str) -> User:
    """Return the user called ``username``."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def grant(session: Session, *, user: User, site: Site, role: str, actor: str) -> Membership:
    """Give ``user`` ``role`` at ``site`` and return the membership (existing or new)."""
    if role not in ROLES:
        raise ValidationError(
            "bad role", problems=[Problem("role", f"must be one of: {', '.join(ROLES)}")]
        )
    existing = session.scalar(
        select(Membership).where(
            Membership.user_id == user.id, Membership.site_id == site.id, Membership.role == role
        )
    )
    if existing is not None:
        return existing
    membership = Membership(user_id=user.id, site_id=site.id, role=role)
    session.add(membership)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="grant",
        entity_type="membership",
        entity_id=membership.id,
        after={"user": user.username, "site": site.code, "role": role},
        site_id=site.id,
    )
    return membership


def revoke(session: Session, *, membership: Membership, actor: str, reason: str) -> None:
    """Remove a membership, keeping what it was in the audit trail."""
    before = {
        "user": membership.user.username,
        "site": membership.site.code,
        "role": membership.role,
    }
    audit.record(
        session,
        actor=actor,
        action="revoke",
        entity_type="membership",
        entity_id=membership.id,
        before=before,
        reason=reason,
        site_id=membership.site_id,
    )
    session.delete(membership)
    session.flush()


def roles_at(session: Session, user: User) -> dict[int, set[str]]:
    """Return the user's roles by site id."""
    out: dict[int, set[str]] = {}
    for m in session.scalars(select(Membership).where(Membership.user_id == user.id)):
        out.setdefault(m.site_id, set()).add(m.role)
    return out
