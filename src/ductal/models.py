"""The ORM: SQLAlchemy 2 typed mappings of every stored entity.

The schema is created only by the Alembic migrations in ``migrations/``; these classes describe it
for the code. Times are stored as UTC; :class:`UTCDateTime` keeps them timezone-aware in Python on
both SQLite (which has no time zones) and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A datetime stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime,
        dict[str, Any]: JSONType,
    }


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    contact_phone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(8), default="en")
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")


ROLES = ("admin", "investigator", "coordinator", "monitor", "statistician", "read_only")


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "site_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    role: Mapped[str] = mapped_column(String(32))

    user: Mapped[User] = relationship(back_populates="memberships")
    site: Mapped[Site] = relationship()


class ProtocolVersion(Base):
    __tablename__ = "protocol_versions"
    __table_args__ = (UniqueConstraint("protocol_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    # Deferred: the definition is parsed once per SHA-256 (see records.protocol_of), so
    # loading a subject's protocol version must not decode the whole document each time.
    definition: Mapped[dict[str, Any]] = mapped_column(deferred=True)
    sha256: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


SUBJECT_STATUSES = (
    "screened",
    "eligible",
    "ineligible",
    "consented",
    "enrolled",
    "completed",
    "withdrawn",
    "lost_to_follow_up",
)


class Subject(Base):
    __tablename__ = "subjects"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(String(32), unique=True)
    protocol_id: Mapped[str] = mapped_column(String(64), index=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    arm: Mapped[str | None] = mapped_column(String(64))
    stratum: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32), default="screened")
    status_reason: Mapped[str | None] = mapped_column(Text)
    screened_on: Mapped[dt.date | None]
    enrolled_on: Mapped[dt.date | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    site: Mapped[Site] = relationship()
    protocol_version: Mapped[ProtocolVersion] = relationship()
    identity: Mapped[Identity | None] = relationship(back_populates="subject")


class Identity(Base):
    """Direct identifiers of a subject, encrypted at rest; never exported, never logged."""

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), unique=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="identity")


class Event(Base):
    """A visit instance: a scheduled event of the protocol for one subject."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("subject_id", "event_key", "instance"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    event_key: Mapped[str] = mapped_column(String(64))
    instance: Mapped[int] = mapped_column(Integer, default=1)
    scheduled_on: Mapped[dt.date | None]
    window_start: Mapped[dt.date | None]
    window_end: Mapped[dt.date | None]
    occurred_on: Mapped[dt.date | None]
    status: Mapped[str] = mapped_column(String(16), default="scheduled")

    subject: Mapped[Subject] = relationship()


FORM_STATUSES = ("incomplete", "complete", "verified", "locked", "signed")


class FormRecord(Base):
    """One form filled for one subject at one event (and instance, for repeating forms)."""

    __tablename__ = "form_records"
    __table_args__ = (UniqueConstraint("subject_id", "event_id", "form_key", "instance"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # no index of its own: the unique constraint's index starts with the subject
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    form_key: Mapped[str] = mapped_column(String(64))
    instance: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="incomplete")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    subject: Mapped[Subject] = relationship()
    event: Mapped[Event] = relationship()

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class DataQuery(Base):
    """A question raised on one field of a form record (open → answered → closed)."""

    __tablename__ = "queries"

    id: Mapped[int] = mapped_column(primary_key=True)
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_records.id"), index=True)
    field: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    origin: Mapped[str] = mapped_column(String(16), default="manual")
    raised_by: Mapped[str] = mapped_column(String(64))
    raised_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    answered_at: Mapped[dt.datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[dt.datetime | None]

    form_record: Mapped[FormRecord] = relationship()


class Signature(Base):
    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_records.id"), index=True)
    signer: Mapped[str] = mapped_column(String(64))
    meaning: Mapped[str] = mapped_column(String(32))
    record_version: Mapped[int] = mapped_column(Integer)
    signed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    voided_at: Mapped[dt.datetime | None]
    void_reason: Mapped[str | None] = mapped_column(Text)


class RandomisationList(Base):
    """A concealed allocation list for one protocol and stratum, generated from a seed."""

    __tablename__ = "randomisation_lists"
    __table_args__ = (UniqueConstraint("protocol_id", "stratum"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[str] = mapped_column(String(64))
    stratum: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(32))
    seed: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RandomisationSlot(Base):
    """One allocation in a list; ``subject_id`` is set once, when the slot is used."""

    __tablename__ = "randomisation_slots"
    __table_args__ = (UniqueConstraint("list_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomisation_lists.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    block: Mapped[int] = mapped_column(Integer)
    arm: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id"), unique=True)
    assigned_by: Mapped[str | None] = mapped_column(String(64))
    assigned_at: Mapped[dt.datetime | None]


class AuditEntry(Base):
    """An append-only, hash-chained record of one change. The database refuses UPDATE and DELETE."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    subject_study_id: Mapped[str | None] = mapped_column(String(32), index=True)
    site_id: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The audit chain's newest entry, in the one row this table ever holds (``id`` 1).

    PostgreSQL appends an entry and moves this row in one statement, behind the chain's
    advisory lock; on SQLite a trigger moves it. :func:`ductal.audit.verify_chain` checks it against
    the trail, so entries cut from the end are noticed.
    """

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_head_one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    entry_id: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime | None]
