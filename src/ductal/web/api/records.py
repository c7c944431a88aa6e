"""API: save forms, verify / sign / lock / unlock records, and the data-query workflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session

from ductal import accounts, forms, queries, records, signatures
from ductal.models import DataQuery, FormRecord, Subject, User
from ductal.records import SubjectFacts
from ductal.vault import Vault
from ductal.web import views
from ductal.web.access import Principal
from ductal.web.api._common import ERROR_RESPONSES, MAX_PAGE, Body, after_rollback, stream_page
from ductal.web.deps import (
    Config,
    DbSession,
    QueryAnswer,
    QueryCloser,
    RecordLocker,
    RecordQuerier,
    RecordSigner,
    RecordUnlocker,
    RecordVerifier,
    RecordViewer,
    SubjectEditorWork,
    Viewer,
)

router = APIRouter(tags=["records"], responses=ERROR_RESPONSES)


class FormSaveIn(Body):
    data: dict[str, Any]
    event: StrictStr | None = Field(default=None, max_length=64)
    event_instance: StrictInt = Field(default=1, ge=1, le=1000)
    instance: StrictInt | None = Field(default=None, ge=1, le=100000)
    expected_version: StrictInt | None = Field(default=None, ge=1)
    reason: StrictStr | None = Field(default=None, max_length=2000)
    allow_incomplete: StrictBool = False


class VersionIn(Body):
    expected_version: StrictInt | None = Field(default=None, ge=1)


class SignIn(VersionIn):
    password: StrictStr = Field(max_length=1024)
    meaning: Literal["authorship", "review", "approval"]


class UnlockIn(Body):
    reason: StrictStr = Field(min_length=1, max_length=2000)


class QueryIn(Body):
    field: StrictStr = Field(max_length=64)
    text: StrictStr = Field(min_length=1, max_length=4000)


class AnswerIn(Body):
    answer: StrictStr = Field(min_length=1, max_length=4000)


class CloseIn(Body):
    note: StrictStr | None = Field(default=None, max_length=4000)


def keep_identifiers(
    db: Session, subject: Subject, form_key: str, data: dict[str, Any], record: FormRecord | None
) -> dict[str, Any]:
    """Return ``data`` with masked identifier fields replaced by their stored values."""
    form = records.subject_protocol(subject).form(form_key)
    out = dict(data)
    stored = record.data if record is not None else {}
    for f in form.fields:
        if f.identifier and out.get(f.key) in (views.MASK, None) and f.key in stored:
            out[f.key] = stored[f.key]
    return out


# the body is read as bytes and checked inside the worker call, after authentication and the
# access check (as with a declared body parameter a refused user learns nothing from a 422)
_FORM_SAVE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": FormSaveIn.model_json_schema()}},
    }
}
_RECORD_JSON = {"application/json": {"schema": {"type": "object", "additionalProperties": True}}}


@router.post(
    "/subjects/{study_id}/forms/{form_key}",
    summary="Validate and save a form (all problems at once; version and reason for changes)",
    openapi_extra=_FORM_SAVE_BODY,
    response_model=None,
    responses={200: {"description": "The stored record", "content": _RECORD_JSON}},
)
async def save_form(
    study_id: str, form_key: str, request: Request, work: SubjectEditorWork
) -> JSONResponse:
    raw = await request.body()

    def save(db: Session, principal: Principal, subject: SubjectFacts) -> dict[str, Any]:
        body = _form_save_in(raw)
        saved = forms.write_form(
            db, subject, form_key=form_key, data=body.data, actor=principal.username,
            **_save_options(body, work.config.vault),
        )  # fmt: skip
        return views.saved_form_dict(db, saved, subject, principal.language)

    def new_record(
        principal: Principal, subject: SubjectFacts
    ) -> tuple[forms.PreparedInsert, Callable[[forms.SavedForm], dict[str, Any]]]:
        body = _form_save_in(raw)
        prepared = forms.prepare_insert(
            subject, form_key=form_key, data=body.data, actor=principal.username,
            **_save_options(body, work.config.vault),
        )  # fmt: skip
        return prepared, lambda saved: views.created_form_dict(saved, subject)

    # the record is plain JSON already: returned as is, not checked again against a model
    return JSONResponse(await work.run(study_id, save, new_record=new_record))


def _save_options(body: FormSaveIn, vault: Vault) -> forms.SaveOptions:
    return forms.SaveOptions(
        event_key=body.event,
        event_instance=body.event_instance,
        instance=body.instance,
        expected_version=body.expected_version,
        reason=body.reason,
        allow_incomplete=body.allow_incomplete,
        vault=vault,
    )


def _form_save_in(raw: bytes) -> FormSaveIn:
    try:
        return FormSaveIn.model_validate_json(raw)
    except PydanticValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


@router.get("/records/{record_id}", summary="One form record with its queries and signatures")
def get_record(access: RecordViewer, db: DbSession) -> dict[str, Any]:
    return views.record_dict(db, access.record, access.principal.language)


@router.post("/records/{record_id}/verify", summary="Source-data verification by a monitor")
def verify(access: RecordVerifier, body: VersionIn, db: DbSession) -> dict[str, Any]:
    signatures.verify(
        db,
        record=access.record,
        actor=access.principal.username,
        expected_version=body.expected_version,
    )
    return views.record_dict(db, access.record, access.principal.language)


@router.post("/records/{record_id}/sign", summary="Electronic signature (password asked again)")
def sign(access: RecordSigner, body: SignIn, db: DbSession, request: Request) -> dict[str, Any]:
    signer = db.get_one(User, access.principal.user_id)
    try:
        signatures.sign(
            db,
            record=access.record,
            signer=signer,
            password=body.password,
            meaning=body.meaning,
            expected_version=body.expected_version,
        )
    except signatures.ReauthenticationFailed:
        user_id, purpose = signer.id, f"sign:{body.meaning}:record:{access.record.id}"
        after_rollback(
            request,
            lambda s: signatures.record_failed_reauthentication(
                s, user=s.get_one(User, user_id), purpose=purpose
            ),
        )
        raise
    return views.record_dict(db, access.record, access.principal.language)


@router.post("/records/{record_id}/lock", summary="Lock a record against change")
def lock(access: RecordLocker, body: VersionIn, db: DbSession) -> dict[str, Any]:
    signatures.lock(
        db,
        record=access.record,
        actor=access.principal.username,
        expected_version=body.expected_version,
    )
    return views.record_dict(db, access.record, access.principal.language)


@router.post("/records/{record_id}/unlock", summary="Unlock a record (admins, with a reason)")
def unlock(access: RecordUnlocker, body: UnlockIn, db: DbSession) -> dict[str, Any]:
    signatures.unlock(db, record=access.record, actor=access.principal.username, reason=body.reason)
    return views.record_dict(db, access.record, access.principal.language)


@router.post("/records/{record_id}/queries", status_code=201, summary="Open a query on a field")
def open_query(access: RecordQuerier, body: QueryIn, db: DbSession) -> dict[str, Any]:
    q = queries.open_query(
        db, record=access.record, field=body.field, text=body.text, actor=access.principal.username
    )
    return views.query_dict(q)


@router.get("/queries", summary="Queries at your sites (paginated, streamed)")
def list_queries(
    principal: Viewer,
    config: Config,
    db: DbSession,
    status: Annotated[
        Literal["open", "answered", "closed"] | None, Query(description="open = not closed")
    ] = None,
    site: Annotated[str | None, Query(max_length=32)] = None,
    user: Annotated[str | None, Query(max_length=64, description="raised or answered by")] = None,
    subject: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[int | None, Query(ge=0, description="cursor: last query id")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> StreamingResponse:
    site_id = accounts.get_site(db, site).id if site else None
    stmt = views.query_list(
        principal, status=status, site_id=site_id, raised_by=user, subject=subject
    )
    if after is not None:
        stmt = stmt.where(DataQuery.id > after)
    codes = views.site_codes(db)
    return stream_page(
        config.engine,
        stmt,
        lambda q, _db: views.query_dict(q, codes),
        limit=limit,
        cursor=lambda q: q.id,
    )


@router.post("/queries/{query_id}/answer", summary="Answer an open query")
def answer(access: QueryAnswer, body: AnswerIn, db: DbSession) -> dict[str, Any]:
    queries.answer_query(
        db, query=access.query, answer=body.answer, actor=access.principal.username
    )
    return views.query_dict(access.query)


@router.post("/queries/{query_id}/close", summary="Close a query")
def close(access: QueryCloser, body: CloseIn, db: DbSession) -> dict[str, Any]:
    queries.close_query(db, query=access.query, actor=access.principal.username, note=body.note)
    return views.query_dict(access.query)
