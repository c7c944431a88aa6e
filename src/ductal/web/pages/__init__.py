"""Server-rendered pages (Jinja templates, a little vendored htmx), in English and Chinese."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI) -> None:
    """Add every page router to ``app``."""
    from ductal.web.pages import account, entry, exchange, procedure, reports, study, work

    for module in (account, study, entry, work, reports, procedure, exchange):
        app.include_router(module.router)
