"""The application factory: ``create_app(settings)`` builds the FastAPI app; nothing at import time.

``ductal serve`` runs it under uvicorn (``app_from_environment`` is the factory uvicorn's
workers call). Pages are server-rendered Jinja templates with a little vendored htmx; the REST
API lives under ``/api/v1`` with its OpenAPI document at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ductal import __version__
from ductal.config import Settings, load_settings
from ductal.db import make_engine
from ductal.errors import Problem
from ductal.vault import Vault
from ductal.web import errors
from ductal.web.auth import AuthPolicy
from ductal.web.deps import WebConfig
from ductal.web.i18n import Translator, load_translations

if TYPE_CHECKING:
    from ductal.web.loop_db import LoopConnections

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; object-src 'none'; frame-ancestors 'self'; base-uri 'self'; "
        b"form-action 'self'",
    ),
]


class SecurityHeaders:
    """ASGI middleware adding security headers (and no-store on pages) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, add_headers)


# routes that take files: still images, the procedure page (with images), imports, checks
UPLOAD_PATHS = re.compile(
    r"^(/api/v1/subjects/[^/]+/images|/subjects/[^/]+/procedure/record"
    r"|/api/v1/protocols/import/\w+|/api/v1/exchange/check/\w+|/studies/[^/]+/exports/(check|import))$"
)


@dataclass(frozen=True)
class WebOptions:
    """Web settings beyond :class:`ductal.config.Settings`."""

    policy: AuthPolicy = field(default_factory=AuthPolicy)
    max_body_bytes: int = 1_000_000
    max_upload_bytes: int = 60_000_000  # still images (20 MB each), import files (50 MB)
    secure_cookies: bool | None = None  # default: on in production


def _jinja() -> Environment:
    folder = resources.files("ductal.web").joinpath("templates")
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(["html", "xml"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _inline_engine(engine: Engine) -> Engine | None:
    """Return a second engine on a SQLite file whose connections never wait for its lock.

    :func:`ductal.web.deps.run_database_work` uses it to run short transactions on the event
    loop itself when no other request holds the database (PostgreSQL, and SQLite in memory,
    have none).
    """
    url = engine.url
    if engine.dialect.name != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return make_engine(url.render_as_string(hide_password=False), busy_timeout=0)


def _loop_connections(engine: Engine, size: int) -> LoopConnections | None:
    """Return the event loop's connections for one-statement work on PostgreSQL, else None."""
    if engine.dialect.name != "postgresql":
        return None
    from ductal.web.loop_db import LoopConnections  # psycopg: the postgres extra's

    return LoopConnections(engine, size)


def create_app(
    settings: Settings, *, engine: Engine | None = None, options: WebOptions | None = None
) -> FastAPI:
    """Return the web application for ``settings`` (an engine is made unless one is given)."""
    from ductal.web.api import exchange as api_exchange
    from ductal.web.api import meta as api_meta
    from ductal.web.api import procedure as api_procedure
    from ductal.web.api import records as api_records
    from ductal.web.api import subjects as api_subjects
    from ductal.web.pages import register as register_pages

    options = options or WebOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        config.close()  # the connections the app opened beside the engine

    app = FastAPI(
        lifespan=lifespan,
        title="ductal",
        version=__version__,
        description="Clinical study platform for IGM/PD and ductal lavage: REST API.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # the interactive docs load scripts from a CDN: not here
        redoc_url=None,
    )
    engine = engine or make_engine(settings.database_url, pool_size=settings.db_pool_size)
    config = WebConfig(
        settings=settings,
        engine=engine,
        vault=Vault(settings.vault_key),
        policy=options.policy,
        jinja=_jinja(),
        translations=load_translations(),
        secure_cookies=(
            settings.env == "production"
            if options.secure_cookies is None
            else options.secure_cookies
        ),
        max_body_bytes=options.max_body_bytes,
        sqlite_lock=threading.Lock() if engine.dialect.name == "sqlite" else nullcontext(),
        inline_engine=_inline_engine(engine),
        database_concurrency=settings.db_concurrency,
        loop_connections=_loop_connections(engine, settings.db_concurrency),
    )
    app.state.ductal = config

    def render_error(
        request: Request, status: int, code: str, message: str, problems: list[Problem]
    ) -> Response:
        from ductal.web.pages._render import render

        return render(
            request,
            "error.html",
            {"status": status, "code": code, "message": message, "problems": problems},
            status=status,
        )

    errors.install(app, render_error, config.engine)

    for module in (api_subjects, api_records, api_meta, api_procedure, api_exchange):
        app.include_router(module.router, prefix="/api/v1")
    register_pages(app)
    static = resources.files("ductal.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        errors.BodyLimit,
        max_bytes=options.max_body_bytes,
        upload_paths=UPLOAD_PATHS,
        max_upload_bytes=options.max_upload_bytes,
    )
    return app


def app_from_environment() -> FastAPI:
    """Return the app configured from ``DUCTAL_*`` variables (the factory uvicorn workers call)."""
    return create_app(load_settings())


def translator(request: Request) -> Translator:
    """Return the translator for the request's user (English before sign-in)."""
    config: WebConfig = request.app.state.ductal
    lang = getattr(request.state, "lang", "en")
    return Translator(config.translations, lang)
