"""Pages: form entry generated from the protocol; record actions (query, verify, sign, lock).

A failed save re-renders the page with the user's own values and every problem beside its field,
so a draft is never lost; a stale version shows whoever saved first and their values.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from ductal import forms, queries, records, signatures
from ductal.errors import Conflict, DuctalError
from ductal.models import FormRecord, User
from ductal.protocols.model import FormDef
from ductal.web import views
from ductal.web.api.records import keep_identifiers
from ductal.web.deps import (
    Config,
    DbSession,
    FormFields,
    QueryAnswer,
    QueryCloser,
    RecordLocker,
    RecordQuerier,
    RecordSigner,
    RecordUnlocker,
    RecordVerifier,
    RecordViewer,
    SubjectEditor,
    SubjectViewer,
)
from ductal.web.pages._render import first, render

router = APIRouter(include_in_schema=False)


def collect(form: FormDef, submitted: dict[str, list[str]]) -> dict[str, Any]:
    """Return the answers of ``form`` from a submitted HTML form (fields are named ``f_<key>``)."""
    data: dict[str, Any] = {}
    for field in form.fields:
        if field.type == "calc":
            continue
        values = [v for v in submitted.get(f"f_{field.key}", []) if v != ""]
        if field.type == "multi_choice":
            if values:
                data[field.key] = values
        elif values:
            data[field.key] = values[0]
    return data


def _entry_url(study_id: str, event: str, event_instance: int, form: str, instance: Any) -> str:
    base = f"/subjects/{study_id}/entry/{event}/{event_instance}/{form}"
    return base + (f"?instance={instance}" if instance else "")


def _page(
    request: Request,
    db: DbSession,
    access: Any,
    *,
    event: str,
    event_instance: int,
    form_key: str,
    instance: int | None,
    values: dict[str, Any] | None = None,
    problems: dict[str, list[str]] | None = None,
    error: str | None = None,
    conflict: dict[str, Any] | None = None,
    reason: str = "",
    msg: str | None = None,
    status: int = 200,
) -> Response:
    subject = access.subject
    principal = access.principal
    view = views.form_entry(
        db,
        subject,
        event_key=event,
        event_instance=event_instance,
        form_key=form_key,
        instance=instance,
        lang=principal.language,
    )
    record = view["record"]
    site = subject.site_id
    if problems and principal.language.startswith("zh"):
        problems = _rule_messages_in_chinese(subject, form_key, problems)
    return render(
        request,
        "entry.html",
        {
            "v": view,
            "protocol_id": subject.protocol_id,
            "values": values if values is not None else (record["data"] if record else {}),
            "problems": problems or {},
            "error": error,
            "conflict": conflict,
            "reason": reason,
            "msg": msg,
            "queries_by_field": _queries_by_field(record),
            "can_edit": principal.can("enter_data", site)
            and (record is None or record["status"] != "locked"),
            "can_query": principal.can("open_query", site),
            "can_answer": principal.can("answer_query", site),
            "can_close": principal.can("close_query", site),
            "can_verify": principal.can("verify", site),
            "can_sign": principal.can("sign", site),
            "can_lock": principal.can("lock", site),
            "can_unlock": principal.can("unlock", site),
            "meanings": signatures.MEANINGS,
        },
        status=status,
    )


def _rule_messages_in_chinese(
    subject: Any, form_key: str, problems: dict[str, list[str]]
) -> dict[str, list[str]]:
    # the records service reports rule messages in English; the protocol carries their Chinese
    form = records.subject_protocol(subject).form(form_key)
    zh = {r.message.en: r.message.get("zh") for r in form.rules}
    return {k: [zh.get(m, m) for m in msgs] for k, msgs in problems.items()}


def _queries_by_field(record: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for q in record["queries"] if record else []:
        out.setdefault(q["field"], []).append(q)
    return out


@router.get("/subjects/{study_id}/entry/{event}/{event_instance}/{form_key}")
def entry(
    request: Request,
    access: SubjectViewer,
    db: DbSession,
    event: str,
    event_instance: int,
    form_key: str,
    instance: Annotated[int | None, Query(ge=1)] = None,
    msg: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    _check_form(access.subject, event, form_key)
    return _page(
        request,
        db,
        access,
        event=event,
        event_instance=event_instance,
        form_key=form_key,
        instance=instance,
        msg=msg,
    )


def _check_form(subject: Any, event: str, form_key: str) -> None:
    from ductal.errors import NotFound

    proto = records.subject_protocol(subject)
    try:
        spec = proto.event(event)
    except KeyError:
        raise NotFound(f"no event {event!r} in {proto.id}") from None
    if form_key not in spec.forms:
        raise NotFound(f"form {form_key!r} is not collected at {event!r}")


def _by_field(exc: DuctalError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in exc.problems:
        out.setdefault(p.field, []).append(p.message)
    return out


@router.post("/subjects/{study_id}/entry/{event}/{event_instance}/{form_key}")
def save(
    request: Request,
    access: SubjectEditor,
    db: DbSession,
    config: Config,
    form: FormFields,
    event: str,
    event_instance: int,
    form_key: str,
    instance: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    _check_form(access.subject, event, form_key)
    subject = access.subject
    proto = records.subject_protocol(subject)
    form_def = proto.form(form_key)
    data = collect(form_def, form)
    version_text = first(form, "expected_version")
    expected = int(version_text) if version_text.isdigit() else None
    reason = first(form, "reason").strip()[:2000] or None
    incomplete = first(form, "action") == "save_incomplete"
    existing: FormRecord | None = None
    if expected is not None:
        existing = _existing(db, subject, event, event_instance, form_key, instance)
        data = keep_identifiers(db, subject, form_key, data, existing)
    try:
        with db.begin_nested():  # a refused save rolls back to here; the page still renders
            record = forms.save_form(
                db,
                subject=subject,
                form_key=form_key,
                data=data,
                actor=access.principal.username,
                event_key=event,
                event_instance=event_instance,
                instance=instance if (instance or not form_def.repeating) else None,
                expected_version=expected,
                reason=reason,
                allow_incomplete=incomplete,
                vault=config.vault,
            )
    except DuctalError as exc:
        conflict = None
        if isinstance(exc, Conflict) and existing is None and expected is not None:
            existing = _existing(db, subject, event, event_instance, form_key, instance)
        if isinstance(exc, Conflict) and existing is not None:
            db.refresh(existing)
            theirs = views.record_dict(db, existing, access.principal.language)
            who = _last_editor(db, existing)
            conflict = {"record": theirs, "by": who}
        return _page(
            request,
            db,
            access,
            event=event,
            event_instance=event_instance,
            form_key=form_key,
            instance=instance,
            values=data,
            problems=_by_field(exc),
            error=exc.message,
            conflict=conflict,
            reason=reason or "",
            status=exc.status,
        )
    url = _entry_url(subject.study_id, event, event_instance, form_key, record.instance)
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}msg=saved", status_code=303)


def _existing(
    db: DbSession, subject: Any, event: str, event_instance: int, form_key: str, instance: Any
) -> FormRecord | None:
    from sqlalchemy import select

    from ductal.models import Event

    ev = db.scalar(
        select(Event).where(
            Event.subject_id == subject.id,
            Event.event_key == event,
            Event.instance == event_instance,
        )
    )
    if ev is None:
        return None
    return db.scalar(
        select(FormRecord).where(
            FormRecord.event_id == ev.id,
            FormRecord.form_key == form_key,
            FormRecord.instance == (instance or 1),
        )
    )


def _last_editor(db: DbSession, record: FormRecord) -> str | None:
    from sqlalchemy import select

    from ductal.models import AuditEntry

    entry = db.scalar(
        select(AuditEntry)
        .where(AuditEntry.entity_type == "form_record", AuditEntry.entity_id == str(record.id))
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    return entry.actor if entry else None


def _back(record: FormRecord, msg: str) -> Response:
    ev = record.event
    url = _entry_url(record.subject.study_id, ev.event_key, ev.instance, record.form_key, None)
    return RedirectResponse(f"{url}?instance={record.instance}&msg={msg}", status_code=303)


def _version(form: dict[str, list[str]]) -> int | None:
    text = first(form, "expected_version")
    return int(text) if text.isdigit() else None


@router.get("/records/{record_id}")
def record_page(access: RecordViewer) -> Response:
    return _back(access.record, "")


@router.post("/records/{record_id}/verify")
def verify(access: RecordVerifier, db: DbSession, form: FormFields) -> Response:
    signatures.verify(
        db, record=access.record, actor=access.principal.username, expected_version=_version(form)
    )
    return _back(access.record, "verified")


@router.post("/records/{record_id}/sign")
def sign(request: Request, access: RecordSigner, db: DbSession, form: FormFields) -> Response:
    signer = db.get_one(User, access.principal.user_id)
    meaning = first(form, "meaning")
    record = access.record
    try:
        with db.begin_nested():
            signatures.sign(
                db,
                record=record,
                signer=signer,
                password=first(form, "password")[:1024],
                meaning=meaning,
                expected_version=_version(form),
            )
    except signatures.ReauthenticationFailed as exc:
        # the refused attempt is kept in the audit trail; the signature is not stored
        signatures.record_failed_reauthentication(
            db, user=signer, purpose=f"sign:{meaning}:record:{record.id}"
        )
        ev = record.event
        return _page(
            request,
            db,
            _SubjectLike(access.principal, record.subject),
            event=ev.event_key,
            event_instance=ev.instance,
            form_key=record.form_key,
            instance=record.instance,
            problems={"sign_" + k: v for k, v in _by_field(exc).items()},
            error=exc.message,
            status=exc.status,
        )
    return _back(record, "signed")


class _SubjectLike:
    """The principal and subject a record page is rendered for."""

    def __init__(self, principal: Any, subject: Any) -> None:
        self.principal = principal
        self.subject = subject


@router.post("/records/{record_id}/lock")
def lock(access: RecordLocker, db: DbSession, form: FormFields) -> Response:
    signatures.lock(
        db, record=access.record, actor=access.principal.username, expected_version=_version(form)
    )
    return _back(access.record, "locked")


@router.post("/records/{record_id}/unlock")
def unlock(access: RecordUnlocker, db: DbSession, form: FormFields) -> Response:
    signatures.unlock(
        db, record=access.record, actor=access.principal.username, reason=first(form, "reason")
    )
    return _back(access.record, "unlocked")


@router.post("/records/{record_id}/queries")
def open_query(access: RecordQuerier, db: DbSession, form: FormFields) -> Response:
    queries.open_query(
        db,
        record=access.record,
        field=first(form, "field"),
        text=first(form, "text")[:4000],
        actor=access.principal.username,
    )
    return _back(access.record, "query_opened")


@router.post("/queries/{query_id}/answer")
def answer(access: QueryAnswer, db: DbSession, form: FormFields) -> Response:
    queries.answer_query(
        db, query=access.query, answer=first(form, "answer")[:4000], actor=access.principal.username
    )
    return _back(access.query.form_record, "query_answered")


@router.post("/queries/{query_id}/close")
def close(access: QueryCloser, db: DbSession, form: FormFields) -> Response:
    queries.close_query(
        db, query=access.query, actor=access.principal.username, note=first(form, "note") or None
    )
    return _back(access.query.form_record, "query_closed")
