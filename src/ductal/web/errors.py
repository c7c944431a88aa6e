"""One error shape for the whole API, and the same errors rendered as pages for browsers.

Every failure — a domain error, a malformed or mistyped body, an unknown route, a wrong method,
an oversized body — leaves as ``{"error": {"code", "message", "fields": [{field, message}]}}``
with its HTTP status. Browsers asking for HTML get the same content as a page (and a sign-in
redirect for 401).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ductal.db import session_scope
from ductal.errors import DuctalError, Problem

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_attempts",
}


def error_body(code: str, message: str, problems: list[Problem] | None = None) -> dict[str, Any]:
    """Return the one JSON error shape."""
    fields = [{"field": p.field, "message": p.message} for p in problems or []]
    return {"error": {"code": code, "message": message, "fields": fields}}


def _wants_html(request: Request) -> bool:
    if request.url.path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "body")


def _pydantic_problems(exc: RequestValidationError) -> tuple[str, list[Problem]]:
    problems = []
    message = "the request does not match what this endpoint expects"
    for err in exc.errors():
        kind = str(err.get("type", ""))
        loc = tuple(err.get("loc", ()))
        if kind == "json_invalid":
            message = "the request body is not valid JSON"
            problems.append(Problem("body", "is not valid JSON"))
            continue
        text = str(err.get("msg", "is not valid"))
        if kind == "extra_forbidden":
            text = "is not a known field"
        elif kind == "missing":
            text = "is required"
        problems.append(Problem(_field_name(loc), text))
    return message, problems


Renderer = Callable[[Request, int, str, str, list[Problem]], Response]


def install(app: FastAPI, render_page: Renderer, engine: Engine) -> None:
    """Register the exception handlers that give every error the same shape."""

    def respond(
        request: Request, status: int, code: str, message: str, problems: list[Problem]
    ) -> Response:
        if _wants_html(request):
            if status == 401:
                query = f"?{request.url.query}" if request.url.query else ""
                target = quote(request.url.path + query)
                expired = "&expired=1" if code == "session_expired" else ""
                return RedirectResponse(f"/login?next={target}{expired}", status_code=303)
            return render_page(request, status, code, message, problems)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(
            error_body(code, message, problems), status_code=status, headers=headers
        )

    @app.exception_handler(DuctalError)
    async def _domain(request: Request, exc: DuctalError) -> Response:
        pending: list[Callable[[Session], None]] = getattr(request.state, "after_rollback", [])
        if pending:
            # the request's own transaction has rolled back by now (function-scoped session)
            await run_in_threadpool(_run_after_rollback, engine, pending)
        return respond(request, exc.status, exc.code, exc.message, exc.problems)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        message, problems = _pydantic_problems(exc)
        malformed = message.startswith("the request body is not")
        code = "malformed_json" if malformed else "invalid_request"
        return respond(request, 400 if malformed else 422, code, message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"there is nothing at {request.url.path}"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return respond(request, exc.status_code, code, message, [])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return respond(request, 500, "internal_error", "something went wrong on the server", [])


class BodyLimit:
    """ASGI middleware refusing request bodies larger than ``max_bytes`` with the error shape."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        upload_paths: re.Pattern[str] | None = None,
        max_upload_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # file uploads (still images, import files) may be larger than a form or JSON body
        self.upload_paths = upload_paths
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if self.upload_paths is not None and self.upload_paths.search(scope.get("path", "")):
            limit = max(limit, self.max_upload_bytes)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send)
            return
        seen = 0
        refused = False

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    raise _TooLarge
            return message

        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)
        except Exception:
            if refused and not started:
                await self._refuse(send)
            else:
                raise

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                "payload_too_large", f"the request body is larger than {self.max_bytes} bytes"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _run_after_rollback(engine: Engine, pending: list[Callable[[Session], None]]) -> None:
    with session_scope(engine) as session:
        for action in pending:
            action(session)
