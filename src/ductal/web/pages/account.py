"""Pages: sign in and out, one's account (password, language, API tokens)."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from ductal.db import session_scope
from ductal.errors import DuctalError, NotFound
from ductal.models import User
from ductal.web import auth
from ductal.web.deps import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    Authenticated,
    Config,
    DbSession,
    FormFields,
    Public,
    RowId,
    client_address,
)
from ductal.web.pages._render import first, render
from ductal.web.store import ApiToken

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # only a path on this site: never an open redirect
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(
    request: Request, config: Config, *, error: str | None, status: int, next_: str, expired: bool
) -> Response:
    pre = request.cookies.get(PRE_SESSION_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {
            "login_csrf": auth.login_csrf(config.settings.secret_key, pre),
            "error": error,
            "next": next_,
            "expired": expired,
        },
        status=status,
    )
    response.set_cookie(
        PRE_SESSION_COOKIE,
        pre,
        httponly=True,
        samesite="strict",
        secure=config.secure_cookies,
        max_age=3600,
    )
    return response


@router.get("/login")
def login_form(
    request: Request,
    config: Config,
    _: Public,
    next: Annotated[str | None, Query(max_length=500)] = None,
    expired: Annotated[bool, Query()] = False,
    lang: Annotated[Literal["en", "zh-Hans"], Query()] = "en",
) -> Response:
    request.state.lang = lang  # before sign-in the page's own switch chooses the language
    return _login_page(
        request, config, error=None, status=200, next_=_safe_next(next), expired=expired
    )


@router.post("/login")
def login(request: Request, config: Config, form: FormFields, _: Public) -> Response:
    username = first(form, "username").strip().lower()[:64]
    password = first(form, "password")[:1024]
    next_ = _safe_next(first(form, "next"))
    pre = request.cookies.get(PRE_SESSION_COOKIE, "")
    expected = auth.login_csrf(config.settings.secret_key, pre) if pre else ""
    if not pre or not secrets.compare_digest(first(form, "csrf_token"), expected):
        return _login_page(
            request,
            config,
            error="login.error_csrf",
            status=403,
            next_=next_,
            expired=False,
        )
    address = client_address(request)
    try:
        with session_scope(config.engine) as db:
            user = auth.authenticate(
                db, username=username, password=password, address=address, policy=config.policy
            )
            secret, _row = auth.start_session(db, user=user, address=address)
    except DuctalError as exc:
        why = exc.code
        with session_scope(config.engine) as db:
            auth.record_failure(db, username=username, address=address, why=why)
        key = "login.error_throttled" if exc.status == 429 else "login.error_wrong"
        return _login_page(
            request, config, error=key, status=exc.status, next_=next_, expired=False
        )
    response = RedirectResponse(next_, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="lax",
        secure=config.secure_cookies,
        path="/",
    )
    response.delete_cookie(PRE_SESSION_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, principal: Authenticated, db: DbSession) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.end_session(db, secret=cookie, actor=principal.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _account_context(db: DbSession, user_id: int) -> dict[str, object]:
    tokens = list(
        db.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id)
        )
    )
    return {"tokens": tokens}


@router.get("/account")
def account(
    request: Request,
    principal: Authenticated,
    db: DbSession,
    msg: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return render(request, "account.html", {**_account_context(db, principal.user_id), "msg": msg})


@router.post("/account/password")
def change_password(
    request: Request, principal: Authenticated, db: DbSession, form: FormFields
) -> Response:
    user = db.get_one(User, principal.user_id)
    try:
        with db.begin_nested():
            auth.change_password(
                db,
                user=user,
                current=first(form, "current_password"),
                new=first(form, "new_password"),
                repeat=first(form, "repeat_password"),
            )
    except DuctalError as exc:
        return render(
            request,
            "account.html",
            {**_account_context(db, principal.user_id), "problems": exc.problems},
            status=exc.status,
        )
    return RedirectResponse("/account?msg=password_changed", status_code=303)


@router.post("/account/language")
def change_language(
    request: Request, principal: Authenticated, db: DbSession, form: FormFields
) -> Response:
    user = db.get_one(User, principal.user_id)
    auth.set_language(db, user=user, language=first(form, "language"))
    return RedirectResponse(_safe_next(first(form, "next", "/account")), status_code=303)


@router.post("/account/tokens")
def create_token(
    request: Request, principal: Authenticated, db: DbSession, form: FormFields
) -> Response:
    user = db.get_one(User, principal.user_id)
    secret = auth.create_token(
        db, user=user, name=first(form, "name", "script")[:100], actor=principal.username
    )
    return render(
        request,
        "account.html",
        {**_account_context(db, principal.user_id), "new_token": secret},
        status=201,
    )


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(token_id: RowId, principal: Authenticated, db: DbSession) -> Response:
    token = db.get(ApiToken, token_id)
    if token is None or token.user_id != principal.user_id:
        raise NotFound(f"no token {token_id}")
    auth.revoke_token(db, token=token, actor=principal.username)
    return RedirectResponse("/account?msg=token_revoked", status_code=303)
