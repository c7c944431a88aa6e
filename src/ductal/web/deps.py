"""Request dependencies as ``Annotated`` aliases: configuration, database, principal, access.

Each access dependency carries the permission it enforces in its ``permission`` attribute; the
route × role test walks every route's dependencies to find it, so a route without an access rule
fails that test.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from jinja2 import Environment
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, joinedload
from starlette.concurrency import run_in_threadpool

from ductal import forms, records
from ductal.config import DEFAULT_DB_CONCURRENCY, Settings
from ductal.db import is_busy, session_scope
from ductal.errors import DuctalError, NotAuthenticated, NotFound, PermissionDenied
from ductal.models import DataQuery, FormRecord, ProtocolVersion, Subject
from ductal.records import SubjectFacts
from ductal.vault import Vault
from ductal.web.access import PUBLIC, Principal
from ductal.web.auth import (
    AuthPolicy,
    digest,
    session_principal,
    token_principal,
    token_principal_and_subject,
)
from ductal.web.recall import Recall

if TYPE_CHECKING:  # psycopg is the postgres extra's: imported only where PostgreSQL is used
    from ductal.web.loop_db import LoopConnections

SESSION_COOKIE = "ductal_session"
PRE_SESSION_COOKIE = "ductal_pre"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfFailed(DuctalError):
    status = 403
    code = "csrf_failed"


@dataclass
class WebConfig:
    """Everything the routes share, built once by :func:`ductal.web.app.create_app`."""

    settings: Settings
    engine: Engine
    vault: Vault
    policy: AuthPolicy
    jinja: Environment
    translations: dict[str, dict[str, str]]
    secure_cookies: bool
    max_body_bytes: int
    page_size: int = 100
    sqlite_lock: AbstractContextManager[Any] = field(default_factory=nullcontext)
    inline_engine: Engine | None = None  # SQLite file: never waits for the lock (see below)
    database_concurrency: int = DEFAULT_DB_CONCURRENCY  # run_database_work's threads at once
    recall: Recall = field(default_factory=Recall)  # what tokens' form saves read, kept
    loop_connections: LoopConnections | None = None  # PostgreSQL: one-statement work
    _slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = field(
        default=None, repr=False
    )

    def close(self) -> None:
        """Close the connections the app opened beside :attr:`engine` (at shutdown)."""
        if self.loop_connections is not None:
            self.loop_connections.close()
        if self.inline_engine is not None:
            self.inline_engine.dispose()

    def database_slots(self) -> asyncio.Semaphore:
        """Return the semaphore admitting :attr:`database_concurrency` transactions at once.

        One per event loop (a semaphore belongs to the loop it first waits on; tests run an
        app on several loops one after another).
        """
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.database_concurrency))
        return self._slots[1]


T = TypeVar("T")


async def run_database_work(config: WebConfig, work: Callable[[Engine], T]) -> T:
    """Run ``work`` — one short transaction on the engine it is given — and return its result.

    On a SQLite file, when no other request of this process holds the database, ``work`` runs
    right here on the event loop, on :attr:`WebConfig.inline_engine`, whose connections fail at
    once rather than wait when another process holds SQLite's write lock (SQLite runs one
    writer at a time anyway). That saves handing the work to a worker thread and back, with
    the two threads passing Python's interpreter lock to and fro at every statement: on a busy
    server this cost more than the statements themselves.

    Otherwise — the database busy, or PostgreSQL, whose statements wait on the network — it
    runs on a worker thread (holding the SQLite lock, as every other route's session does). A
    busy first attempt was rolled back whole, so running it again there is safe. Running the
    PostgreSQL work on the event loop through psycopg's asyncio driver was measured as well:
    the form save was no faster and a one-statement route a third slower.

    At most :attr:`WebConfig.database_concurrency` such transactions run on threads at once;
    the others wait here, on the event loop. Python runs one thread of a process at a time, so
    a few threads suffice to overlap one's computing with others' waiting on the database;
    with more, every statement's return means a fight over the interpreter lock (measured on
    PostgreSQL, 16 clients, 2 workers: 3 at once saved a fifth more forms per second than 8,
    with a shorter latency tail).
    """
    inline = config.inline_engine
    lock = config.sqlite_lock
    if inline is not None and isinstance(lock, _LOCK_TYPE) and lock.acquire(blocking=False):
        try:
            return work(inline)
        except OperationalError as exc:
            if not is_busy(exc):
                raise
        finally:
            lock.release()

    def threaded() -> T:
        with lock:
            return work(config.engine)

    async with config.database_slots():
        return await run_in_threadpool(threaded)


_LOCK_TYPE = type(threading.Lock())


async def _config(request: Request) -> WebConfig:
    # async: a plain attribute read needs no trip through the thread pool
    config: WebConfig = request.app.state.ductal
    return config


Config = Annotated[WebConfig, Depends(_config)]


def _db(config: Config) -> Iterator[Session]:
    # SQLite admits one writer at a time and ductal begins every transaction IMMEDIATE; waiting
    # on a lock here queues the worker threads instead of leaving them to SQLite's busy-sleep,
    # whose growing back-off gives a long latency tail under concurrent load
    with config.sqlite_lock, session_scope(config.engine) as session:
        yield session


# "function" scope: the transaction commits before the response leaves, so a client never sees
# success for a write that then fails to commit
DbSession = Annotated[Session, Depends(_db, scope="function")]


async def _submitted_csrf(request: Request) -> str | None:
    if request.method in SAFE_METHODS:
        return None
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    kind = request.headers.get("content-type", "")
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


def authenticate(request: Request, db: Session, config: WebConfig, csrf: str | None) -> Principal:
    """Return who sends ``request`` (bearer token, or session cookie with its CSRF check)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise NotAuthenticated("use 'Authorization: Bearer <token>'")
        return _remember(request, token_principal(db, secret=credential.strip()))
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise NotAuthenticated("please sign in")
    principal = session_principal(db, secret=cookie, policy=config.policy)
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        csrf or "", principal.csrf_token
    ):
        raise CsrfFailed(
            "this form is out of date or was not sent by ductal (CSRF check failed); "
            "reload the page and try again"
        )
    return _remember(request, principal)


def _remember(request: Request, principal: Principal) -> Principal:
    """Keep who sends ``request`` for the error pages and the language of the answer."""
    request.state.principal = principal
    request.state.lang = principal.language
    return principal


def _principal(
    request: Request,
    db: DbSession,
    config: Config,
    csrf: Annotated[str | None, Depends(_submitted_csrf)],
) -> Principal:
    return authenticate(request, db, config, csrf)


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def _denied(permission: str) -> PermissionDenied:
    return PermissionDenied(f"your role does not allow this ({permission.replace('_', ' ')})")


_REQUIRE_CACHE: dict[str, Callable[..., Awaitable[Principal]]] = {}


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """Return the dependency admitting users who hold ``permission`` at one of their sites."""
    if permission in _REQUIRE_CACHE:
        return _REQUIRE_CACHE[permission]

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            raise _denied(permission)
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]
    _REQUIRE_CACHE[permission] = dependency
    return dependency


async def public() -> None:
    """Mark a route as open to everyone (sign-in page, static files, health check)."""


public.permission = PUBLIC  # type: ignore[attr-defined]
Public = Annotated[None, Depends(public)]
Authenticated = Annotated[Principal, Depends(require("authenticated"))]
Viewer = Annotated[Principal, Depends(require("view"))]
Screener = Annotated[Principal, Depends(require("screen"))]
Auditor = Annotated[Principal, Depends(require("audit"))]
Reporter = Annotated[Principal, Depends(require("reports"))]
Admin = Annotated[Principal, Depends(require("admin"))]
QueryAnswerer = Annotated[Principal, Depends(require("answer_query"))]


@dataclass
class SubjectAccess:
    principal: Principal
    subject: Subject


@dataclass
class RecordAccess:
    principal: Principal
    record: FormRecord

    @property
    def subject(self) -> Subject:
        return self.record.subject


@dataclass
class QueryAccess:
    principal: Principal
    query: DataQuery


def _check(principal: Principal, site_id: int, permission: str, missing: str) -> None:
    if not principal.belongs_to(site_id):
        raise NotFound(missing)  # another site's data does not exist for this user
    if not principal.can(permission, site_id):
        raise _denied(permission)


# Row ids are 32-bit integer columns: a larger id in a URL is refused as bad input (422) here
# rather than reaching the database driver, which cannot bind it.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="row id")]


# the protocol is parsed once per process and cached by its digest: do not load the stored
# definition (tens of kilobytes of JSON) on every request
_LEAN_PROTOCOL = joinedload(Subject.protocol_version).defer(ProtocolVersion.definition)
_SUBJECT_BY_STUDY_ID = (
    select(Subject).where(Subject.study_id == bindparam("study_id")).options(_LEAN_PROTOCOL)
)


def find_subject(
    db: Session, study_id: str, principal: Principal, permission: str
) -> SubjectAccess:
    """Return ``study_id`` if ``principal`` holds ``permission`` at its site (else 404 / 403)."""
    subject = db.scalar(_SUBJECT_BY_STUDY_ID, {"study_id": study_id})
    missing = f"no subject {study_id!r}"
    if subject is None:
        raise NotFound(missing)
    _check(principal, subject.site_id, permission, missing)
    return SubjectAccess(principal, subject)


def subject_access(permission: str) -> Callable[..., SubjectAccess]:
    """Return the dependency loading ``{study_id}`` if the user holds ``permission`` at its site."""

    def dependency(study_id: str, principal: CurrentPrincipal, db: DbSession) -> SubjectAccess:
        return find_subject(db, study_id, principal, permission)

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


@dataclass
class SubjectWork:
    """A subject route's whole database work, run as one call by :func:`run_database_work`.

    The route gets this instead of an opened session: :meth:`run` opens the transaction,
    authenticates, reads the subject's facts (one Core statement, no ORM object) and checks
    ``permission`` at its site, then calls ``work`` and commits, without going back to the event
    loop in between (each return to it would keep the SQLite lock held while other requests are
    served). The checks, their order and their errors are those of :func:`subject_access`.

    What a token's request read is kept (:mod:`ductal.web.recall`), and when its next request
    for the same subject stores a new form (``new_record``, see
    :func:`ductal.forms.prepare_insert`), the form is stored on those facts, unconfirmed, by
    statements that confirm them as they store it. On PostgreSQL that is one statement, run on
    the event loop (:mod:`ductal.web.loop_db`) with no transaction around it, so it commits as
    it ends: the audit chain's lock, which every writer queues for, is let go then, not after a
    further round trip to commit (and, before that, a wait for a thread to get the interpreter
    lock back). On SQLite it is a short transaction of plain sqlite3 statements
    (:mod:`ductal.sqlite_save`). Should nothing be stored (the facts no longer held, a save of
    the same subject came first, the record exists), or the request be refused before (invalid
    input, a save that cannot be done so), the request runs again the ordinary way, whose
    answer is the one given.
    """

    request: Request
    config: WebConfig
    csrf: str | None
    permission: str

    async def run(
        self,
        study_id: str,
        work: Callable[[Session, Principal, SubjectFacts], T],
        *,
        new_record: NewRecord[T] | None = None,
    ) -> T:
        """Run ``work`` for subject ``study_id`` and return its result (``new_record``: the same
        work as a new form on unconfirmed facts, and its answer; see above)."""
        token = self._bearer_token()
        token_hash = None if token is None or new_record is None else digest(token)
        if token_hash is not None and new_record is not None:
            kept = self.config.recall.get(token_hash, study_id)
            if kept is not None:
                try:
                    return await self._on_kept_facts(kept, new_record)
                except _ANSWERED_AFRESH:
                    self.config.recall.forget(token_hash, study_id)

        def call(engine: Engine) -> T:
            with session_scope(engine) as db:
                principal, facts = self._principal_and_subject(db, token, study_id)
                missing = f"no subject {study_id!r}"
                if facts is None:
                    raise NotFound(missing)
                _check(principal, facts.site_id, self.permission, missing)
                result = work(db, principal, facts)
            if token_hash is not None:
                self.config.recall.keep(
                    token_hash, principal, facts, self.permission, engine.dialect.name
                )
            return result

        return await run_database_work(self.config, call)

    async def _on_kept_facts(
        self, kept: tuple[Principal, SubjectFacts], new_record: NewRecord[T]
    ) -> T:
        principal, facts = kept
        _check(principal, facts.site_id, self.permission, "")
        prepared, answer = new_record(_remember(self.request, principal), facts)
        connections = self.config.loop_connections
        if connections is None:  # SQLite

            def store(engine: Engine) -> forms.SavedForm:
                with engine.begin() as conn:
                    return prepared.store(conn)

            return answer(await run_database_work(self.config, store))
        statement = prepared.statement
        # a database error is reported as it is: the statement may have committed before the
        # connection failed, and running the request again could store the form twice
        row = await connections.fetch_one(statement.psycopg(), statement.params)
        return answer(prepared.saved(row))

    def _bearer_token(self) -> str | None:
        """Return the request's bearer token, if it sends one."""
        scheme, _, credential = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        return credential.strip()

    def _principal_and_subject(
        self, db: Session, token: str | None, study_id: str
    ) -> tuple[Principal, SubjectFacts | None]:
        if token is None:
            principal = authenticate(self.request, db, self.config, self.csrf)
            return principal, records.subject_facts(db, study_id)
        # a script's token: the token, its user's roles and the subject in one statement
        principal, facts = token_principal_and_subject(db, secret=token, study_id=study_id)
        return _remember(self.request, principal), facts


# refusals decided before anything is stored
_ANSWERED_AFRESH = (DuctalError, RequestValidationError, forms.Unconfirmed)

# the route's save as a new form on unconfirmed facts: the prepared form, and the answer to
# give once it is stored
NewRecord = Callable[
    [Principal, SubjectFacts], tuple[forms.PreparedInsert, Callable[[forms.SavedForm], T]]
]


def subject_work(permission: str) -> Callable[..., Awaitable[SubjectWork]]:
    """Return the dependency handing a route a :class:`SubjectWork` for ``permission``."""

    async def dependency(request: Request) -> SubjectWork:
        # no sub-dependencies: each would be one more solving step on every save
        return SubjectWork(
            request, request.app.state.ductal, await _submitted_csrf(request), permission
        )

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


def record_access(permission: str) -> Callable[..., RecordAccess]:
    """Return the dependency loading ``{record_id}`` when the user holds ``permission`` there."""

    def dependency(record_id: RowId, principal: CurrentPrincipal, db: DbSession) -> RecordAccess:
        record = db.get(FormRecord, record_id)
        missing = f"no form record {record_id}"
        if record is None:
            raise NotFound(missing)
        _check(principal, record.subject.site_id, permission, missing)
        return RecordAccess(principal, record)

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


def query_access(permission: str) -> Callable[..., QueryAccess]:
    """Return the dependency loading ``{query_id}`` when the user holds ``permission`` there."""

    def dependency(query_id: RowId, principal: CurrentPrincipal, db: DbSession) -> QueryAccess:
        query = db.get(DataQuery, query_id)
        missing = f"no query {query_id}"
        if query is None:
            raise NotFound(missing)
        _check(principal, query.form_record.subject.site_id, permission, missing)
        return QueryAccess(principal, query)

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


SubjectViewer = Annotated[SubjectAccess, Depends(subject_access("view"))]
SubjectScreener = Annotated[SubjectAccess, Depends(subject_access("enrol"))]
SubjectEditor = Annotated[SubjectAccess, Depends(subject_access("enter_data"))]
SubjectEditorWork = Annotated[SubjectWork, Depends(subject_work("enter_data"))]
SubjectRandomiser = Annotated[SubjectAccess, Depends(subject_access("randomise"))]
SubjectAuditor = Annotated[SubjectAccess, Depends(subject_access("audit"))]
SubjectIdentity = Annotated[SubjectAccess, Depends(subject_access("identity"))]
RecordViewer = Annotated[RecordAccess, Depends(record_access("view"))]
RecordVerifier = Annotated[RecordAccess, Depends(record_access("verify"))]
RecordSigner = Annotated[RecordAccess, Depends(record_access("sign"))]
RecordLocker = Annotated[RecordAccess, Depends(record_access("lock"))]
RecordUnlocker = Annotated[RecordAccess, Depends(record_access("unlock"))]
RecordQuerier = Annotated[RecordAccess, Depends(record_access("open_query"))]
QueryAnswer = Annotated[QueryAccess, Depends(query_access("answer_query"))]
QueryCloser = Annotated[QueryAccess, Depends(query_access("close_query"))]


async def _form_fields(request: Request) -> dict[str, list[str]]:
    form = await request.form()
    out: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            out.setdefault(key, []).append(value)
    return out


FormFields = Annotated[dict[str, list[str]], Depends(_form_fields)]


def client_address(request: Request) -> str:
    """Return the client's address as seen by the server (for throttling and the audit trail)."""
    return request.client.host if request.client else "unknown"
