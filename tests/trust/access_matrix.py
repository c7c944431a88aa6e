"""The access-control proof: every route × every role × own site / other site, tried for real.

Run ``python -m tests.trust.access_matrix`` to print the matrix as Markdown, or with
``--write docs/validation.md`` to replace the table between its markers there;
``tests/trust/test_access_matrix.py`` asserts every cell. The study data
(subject, form record, query) lives at site RIV. For each role there is one user holding that role
at RIV only ("own") and one holding it at HIL only ("other"). Each user calls every route: the API
with a bearer token, the pages with a signed-in browser session and its CSRF token, POSTs with a
deliberately empty body (so an admitted request stops at validation and changes little).

Expected: a public route admits everyone; a role without the route's permission is refused
(403, or 404 where the object belongs to another site); with the permission, a user at the
object's site is admitted, and a user at another site is told the object does not exist (404).
Routes that name no site-bound object (lists, one's account, admin) admit the permission holder
wherever they are; their answers hold only the user's own sites (asserted separately).
"""

from __future__ import annotations

import html
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from ductal import accounts, records
from ductal.config import load_settings
from ductal.db import make_engine, migrate, session_scope
from ductal.models import ROLES
from ductal.protocols.loader import builtin_protocol
from ductal.signatures import hash_password
from ductal.web.access import PERMISSIONS, PUBLIC
from ductal.web.app import WebOptions, create_app
from ductal.web.auth import AuthPolicy, create_token
from ductal.web.store import ApiToken
from tests.web.conftest import ELIGIBLE

PASSWORD = "matrix horse battery staple"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
SITE_BOUND = ("{study_id}", "{record_id}", "{query_id}")
# routes bound to RIV's data without naming an object: the site is in the body (screening), or
# the answer pools every site of the protocol (the efficacy report)
SITE_BOUND_ROUTES = {
    ("POST", "/api/v1/subjects"),
    ("POST", "/studies/{protocol_id}/screen"),
    ("GET", "/studies/{protocol_id}/reports"),
    ("POST", "/studies/{protocol_id}/reports"),
    ("GET", "/studies/{protocol_id}/reports/view/{path:path}"),
}
API_BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/subjects": {"protocol": "lavage-observational", "site": "RIV", "screening": {}},
}
PAGE_FIELDS: dict[str, dict[str, str]] = {"/studies/{protocol_id}/screen": {"site": "RIV"}}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
SCREENING = ELIGIBLE  # the web tests' eligible screening form
BASELINE = {
    "assessment_date": "2024-03-02",
    "side": "left",
    "culture": "negative",
    "infection_evidence": 0,
}
KNOWN_NAME = "Zyxwvut Qponml"


@dataclass(frozen=True)
class Cell:
    method: str
    path: str
    permission: str
    role: str
    where: str  # "own" or "other"
    status: int
    expected: str  # "admit", "refuse" or "any" (public: anything but a server error)
    hidden: bool = False  # a 404 saying the RIV object does not exist (the site-hiding answer)

    @property
    def outcome(self) -> str:
        if self.status >= 500:
            return "error"
        if self.status in (401, 403) or (self.status == 404 and self.hidden):
            return "refuse"
        return "admit"  # including a 404 about something else: access control was passed

    @property
    def ok(self) -> bool:
        if self.expected == "any":
            return self.outcome != "error"
        return self.outcome == self.expected


def routes_of(app: FastAPI) -> list[RouteContext]:
    return [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]


def permission_of(route: RouteContext) -> str:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "permission", None)
        if found is not None:
            return str(found)
        stack.extend(dep.dependencies)
    raise AssertionError(f"{route.path} declares no permission")


def expected(permission: str, role: str, where: str, method: str, path: str) -> str:
    if permission == PUBLIC:
        return "any"  # e.g. the login form's own CSRF check refuses the empty post
    if role not in PERMISSIONS[permission]:
        return "refuse"
    bound = any(p in path for p in SITE_BOUND) or (method, path) in SITE_BOUND_ROUTES
    if where == "other" and bound:
        return "refuse"
    return "admit"


@dataclass
class World:
    app: FastAPI
    engine: Engine
    tokens: dict[str, str]  # username -> API token
    spare_tokens: dict[str, int]  # username -> id of a token the user may revoke
    values: dict[str, Any]


def _user(s: Any, name: str, site: Any, role: str) -> tuple[str, int]:
    user = accounts.create_user(
        s,
        username=name,
        full_name=f"Matrix {name}",
        actor="setup",
        password_hash=hash_password(PASSWORD, hasher=CHEAP),
    )
    accounts.grant(s, user=user, site=site, role=role, actor="setup")
    token = create_token(s, user=user, name="api", actor="setup")
    create_token(s, user=user, name="spare", actor="setup")
    s.flush()
    spare = s.scalar(
        select(ApiToken.id).where(ApiToken.user_id == user.id, ApiToken.name == "spare")
    )
    return token, int(spare)


def build_world(database_url: str, data_dir: Path) -> World:
    engine = make_engine(database_url)
    migrate(engine)
    tokens: dict[str, str] = {}
    spares: dict[str, int] = {}
    with session_scope(engine) as s:
        records.register_protocol(
            s, protocol=builtin_protocol("lavage-observational"), actor="setup"
        )
        riv = accounts.create_site(s, code="RIV", name="Riverside (matrix)", actor="setup")
        hil = accounts.create_site(s, code="HIL", name="Hillside (matrix)", actor="setup")
        for role in ROLES:
            for where, site in (("own", riv), ("other", hil)):
                tokens[f"{role}_{where}"], spares[f"{role}_{where}"] = _user(
                    s, f"{role}_{where}", site, role
                )
        spare_user = accounts.create_user(s, username="spare", full_name="Spare", actor="setup")
        membership = accounts.grant(s, user=spare_user, site=riv, role="read_only", actor="setup")
        s.flush()
        membership_id = membership.id
    settings = load_settings(
        {"DUCTAL_DATA_DIR": str(data_dir), "DUCTAL_DATABASE_URL": database_url}
    )
    app = create_app(
        settings,
        engine=engine,
        options=WebOptions(policy=AuthPolicy(max_failures_per_user=1000)),
    )
    world = World(app, engine, tokens, spares, {})
    with TestClient(app, raise_server_exceptions=False) as c:
        coord = {"Authorization": f"Bearer {tokens['coordinator_own']}"}
        r = c.post(
            "/api/v1/subjects",
            json={
                "protocol": "lavage-observational",
                "site": "RIV",
                "screening": SCREENING,
                "identity": {"name": KNOWN_NAME, "date_of_birth": "1988-07-14"},
            },
            headers=coord,
        )
        assert r.status_code == 201, r.text
        sid = r.json()["study_id"]
        r = c.post(
            f"/api/v1/subjects/{sid}/enrol", json={"enrolled_on": "2024-03-02"}, headers=coord
        )
        assert r.status_code == 200, r.text
        r = c.post(f"/api/v1/subjects/{sid}/forms/baseline", json={"data": BASELINE}, headers=coord)
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        r = c.post(
            f"/api/v1/records/{rid}/queries",
            json={"field": "side", "text": "check the side"},
            headers={"Authorization": f"Bearer {tokens['monitor_own']}"},
        )
        assert r.status_code == 201, r.text
        qid = r.json()["id"]
        # a report file, so that the route serving report files has something to serve
        csrf = login(c, "admin_own")
        r = c.post(
            "/studies/lavage-observational/reports",
            data={"csrf_token": csrf},
            headers={"accept": "text/html"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text[:300]
    made = sorted(
        p for p in (data_dir / "reports" / "web").rglob("*") if p.suffix in (".html", ".pdf")
    )
    report_file = made[0].name if made else "missing.html"
    world.values = {
        "study_id": sid,
        "record_id": rid,
        "query_id": qid,
        "protocol_id": "lavage-observational",
        "form_key": "baseline",
        "event": "baseline",
        "event_instance": 1,
        "membership_id": membership_id,
        "action": "sites",
        "path": report_file,
    }
    return world


def login(client: TestClient, username: str) -> str:
    page = client.get("/login", headers={"accept": "text/html"})
    token = CSRF.search(page.text)
    assert token is not None
    r = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)},
        headers={"accept": "text/html"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[:300]
    found = CSRF.search(client.get("/account", headers={"accept": "text/html"}).text)
    assert found is not None
    return found.group(1)


def cells(world: World, roles: tuple[str, ...] = ROLES) -> Iterator[Cell]:
    """Yield one cell per route, method, role and site, calling the route each time."""
    routes = routes_of(world.app)
    # pages after the API (a page call may revoke a spare token), signing out last of all
    routes.sort(key=lambda r: (not (r.path or "").startswith("/api"), r.path == "/logout"))
    for role in roles:
        for where in ("own", "other"):
            user = f"{role}_{where}"
            values = {**world.values, "token_id": world.spare_tokens[user]}
            with TestClient(world.app, raise_server_exceptions=False) as client:
                csrf = login(client, user)
                for route in routes:
                    permission = permission_of(route)
                    template = route.path or ""
                    path = PARAM.sub(lambda m, v=values: str(v[m.group(1)]), template)
                    for method in sorted(route.methods or []):
                        status, text = _call(client, world, user, csrf, method, path, template)
                        yield Cell(
                            method,
                            route.path or "",
                            permission,
                            role,
                            where,
                            status,
                            expected(permission, role, where, method, template),
                            status == 404 and _hiding(world, text),
                        )


def _call(
    client: TestClient,
    world: World,
    user: str,
    csrf: str,
    method: str,
    path: str,
    template: str,
) -> tuple[int, str]:
    if path.startswith("/api/"):
        kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {world.tokens[user]}"}}
        if method == "POST":
            kwargs["json"] = API_BODIES.get(template, {})
    else:
        kwargs = {"headers": {"accept": "text/html"}, "follow_redirects": False}
        if method == "POST":
            kwargs["data"] = {"csrf_token": csrf, **PAGE_FIELDS.get(template, {})}
    r = client.request(method, path, **kwargs)
    return r.status_code, r.text


def _hiding(world: World, text: str) -> bool:
    """Return True when ``text`` says RIV, or its subject, record or query, does not exist."""
    v = world.values
    text = html.unescape(text)
    return (
        f"no subject '{v['study_id']}'" in text
        or f"no form record {v['record_id']}" in text
        or f"no query {v['query_id']}" in text
        or "no site 'RIV'" in text
    )


def markdown(all_cells: list[Cell]) -> str:
    """Return the matrix as a Markdown table: a row per route, a column per role and site."""
    columns = [(r, w) for r in ROLES for w in ("own", "other")]
    by_key = {(c.method, c.path, c.role, c.where): c for c in all_cells}
    keys = sorted({(c.method, c.path, c.permission) for c in all_cells}, key=lambda k: (k[1], k[0]))
    head = "| route | permission | " + " | ".join(f"{r} {w}" for r, w in columns) + " |"
    rule = "|---|---|" + "---|" * len(columns)
    lines = [head, rule]
    for method, path, permission in keys:
        row = []
        for role, where in columns:
            c = by_key[(method, path, role, where)]
            mark = {"admit": "✔", "refuse": "✘"}.get(c.outcome, "⚠")
            row.append(f"{mark} {c.status}" + ("" if c.ok else " **UNEXPECTED**"))
        lines.append(f"| `{method} {path}` | {permission} | " + " | ".join(row) + " |")
    total = len(all_cells)
    wrong = sum(not c.ok for c in all_cells)
    lines.append("")
    lines.append(
        f"{total} cells, {sum(c.outcome == 'admit' for c in all_cells)} admitted, "
        f"{sum(c.outcome == 'refuse' for c in all_cells)} refused, {wrong} unexpected. "
        "✔ admitted: past access control (2xx, 3xx; 409/422 for the empty body; 404 about "
        "something other than the object, e.g. a form record that is not a procedure). "
        "✘ refused: 401, 403, or 404 saying RIV's subject, record or query does not exist."
    )
    return "\n".join(lines)


@contextmanager
def temporary_world() -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="ductal-matrix-") as tmp:
        world = build_world(f"sqlite:///{tmp}/matrix.sqlite", Path(tmp) / "data")
        try:
            yield world
        finally:
            world.engine.dispose()


START, END = "<!-- access-matrix:start -->", "<!-- access-matrix:end -->"


def write_into(doc: Path, table: str) -> None:
    """Replace the text between the matrix markers of ``doc`` with ``table``."""
    text = doc.read_text()
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    import sys

    with temporary_world() as w:
        table = markdown(list(cells(w)))
    if len(sys.argv) > 2 and sys.argv[1] == "--write":
        write_into(Path(sys.argv[2]), table)
    else:
        print(table)
