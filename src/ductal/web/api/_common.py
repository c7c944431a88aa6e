"""Helpers shared by the API routers: request models, streamed pages, follow-up audit writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine
from sqlalchemy.orm import Session

MAX_PAGE = 1000


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[ErrorField]


class ErrorOut(BaseModel):
    """The one error shape of the API."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "Malformed JSON"),
        (401, "Not signed in, bad token, expired session"),
        (403, "Role not allowed here, or CSRF check failed"),
        (404, "Not found (or at a site you do not belong to)"),
        (409, "Changed by someone else first, or not allowed in this state"),
        (413, "Request body too large"),
        (422, "Invalid input; every problem is named in fields"),
    )
}


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


def after_rollback(request: Request, action: Callable[[Session], None]) -> None:
    """Run ``action`` in a new transaction after this request's transaction rolls back.

    Used to keep the audit entry of a refused attempt (a wrong password when signing) that
    the failing request's own transaction cannot keep.
    """
    pending: list[Callable[[Session], None]] = getattr(request.state, "after_rollback", [])
    pending.append(action)
    request.state.after_rollback = pending


def stream_page(
    engine: Engine,
    stmt: Any,
    to_dict: Callable[[Any, Session], dict[str, Any]],
    *,
    limit: int,
    cursor: Callable[[Any], str | int],
) -> StreamingResponse:
    """Return a streamed JSON page ``{"items": [...], "next": cursor|null}`` of ``stmt``'s rows.

    ``stmt`` is already filtered to the caller's rows and after the cursor; one row beyond
    ``limit`` is read to know whether there is a next page.
    """

    def generate() -> Iterator[str]:
        with Session(engine) as session:
            yield '{"items": ['
            last: Any = None
            count = 0
            more = False
            rows = session.scalars(stmt.limit(limit + 1).execution_options(yield_per=200))
            try:
                for row in rows:
                    if count == limit:
                        more = True
                        break
                    yield ("," if count else "") + json.dumps(
                        to_dict(row, session), ensure_ascii=False, default=str
                    )
                    last = row
                    count += 1
            finally:
                rows.close()  # a server-side cursor on PostgreSQL
            nxt = json.dumps(cursor(last)) if more and last is not None else "null"
            yield f'], "count": {count}, "next": {nxt}}}'

    return StreamingResponse(generate(), media_type="application/json")
