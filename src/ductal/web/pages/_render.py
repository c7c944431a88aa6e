"""Rendering of pages: the template, the translator, the user, the CSRF token."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from ductal import __version__
from ductal.web.deps import WebConfig
from ductal.web.i18n import Translator


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    """Return ``template`` rendered for the request's user and language."""
    config: WebConfig = request.app.state.ductal
    principal = getattr(request.state, "principal", None)
    lang = getattr(request.state, "lang", "en")
    t = Translator(config.translations, lang)
    page = config.jinja.get_template(template).render(
        request=request,
        t=t,
        tm=t.message,
        lang=t.lang,
        html_lang="zh-Hans" if t.lang == "zh-Hans" else "en",
        principal=principal,
        csrf_token=principal.csrf_token if principal else context.pop("login_csrf", ""),
        version=__version__,
        path=request.url.path,
        idle_minutes=config.policy.idle_minutes,
        **context,
    )
    return HTMLResponse(page, status_code=status)


def first(form: dict[str, list[str]], key: str, default: str = "") -> str:
    """Return the first value of ``key`` in a submitted form."""
    values = form.get(key) or [default]
    return values[0]
