"""A token's next form save of a subject reuses what its last one read, confirmed as it stores.

Each test saves once to have the facts kept, then changes what they rest on and checks that the
next save gives the answer a fresh save gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text

from ductal import accounts, audit
from ductal.db import session_scope
from ductal.models import AuditEntry, FormRecord
from ductal.records import SubjectFacts
from ductal.web.access import Principal
from ductal.web.auth import digest, revoke_token
from ductal.web.recall import Recall
from ductal.web.store import ApiToken
from tests.web.conftest import ADVERSE_EVENT, World, bearer, enrolled

AE = ADVERSE_EVENT


def _save(client: TestClient, study_id: str, headers: dict[str, str], **body: Any) -> Any:
    payload = {"event": "unscheduled", "data": dict(AE), **body}
    return client.post(
        f"/api/v1/subjects/{study_id}/forms/adverse_event", json=payload, headers=headers
    )


def _revoke_coordinators_token(world: World) -> None:
    with session_scope(world.engine) as session:
        token = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == digest(world.tokens["coordinator"]))
        ).one()
        revoke_token(session, token=token, actor="admin")


def _counts(world: World) -> tuple[int, int]:
    with world.engine.connect() as conn:
        records = conn.execute(select(func.count()).select_from(FormRecord)).scalar_one()
        entries = conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    return int(records), int(entries)


def _kept(world: World, user: str, study_id: str) -> tuple[Principal, SubjectFacts] | None:
    recall: Recall = world.app.state.ductal.recall
    return recall.get(digest(world.tokens[user]), study_id)


@pytest.fixture
def kept(world: World, client: TestClient) -> str:
    """A subject the coordinator's token has saved a form for (its facts kept): its study id."""
    headers = bearer(world, "coordinator")
    study_id = enrolled(client, headers)
    first = _save(client, study_id, headers)
    assert first.status_code == 200, first.text
    assert _kept(world, "coordinator", study_id) is not None
    return study_id


def _statements(world: World, action: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run ``action``; return its result and every statement sent through SQLAlchemy or, on
    PostgreSQL, the event loop's connections (:mod:`ductal.web.loop_db`, marked ``loop:``)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    config = world.app.state.ductal
    loop = config.loop_connections
    real = loop.fetch_one if loop is not None else None

    async def noted(query: str, params: Any) -> Any:
        seen.append("loop: " + query)
        assert real is not None
        return await real(query, params)

    # SQLite: a free database is written through the app's second engine (see deps.py)
    engines = [e for e in (world.engine, config.inline_engine) if e is not None]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    if loop is not None:
        loop.fetch_one = noted
    try:
        result = action()
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)
        if loop is not None:
            loop.fetch_one = real
    return result, seen


_ORDINARY_READ = "SELECT api_tokens.revoked_at"  # the token, roles and facts, read afresh


def _postgres(world: World) -> bool:
    return world.engine.dialect.name == "postgresql"


def test_the_next_save_is_one_statement_that_confirms_and_commits(
    world: World, client: TestClient, kept: str
) -> None:
    """PostgreSQL: the whole save is one statement, on the event loop."""
    if not _postgres(world):
        pytest.skip("the PostgreSQL case")
    headers = bearer(world, "coordinator")
    saved, seen = _statements(world, lambda: _save(client, kept, headers))
    assert saved.status_code == 200, saved.text
    assert len(seen) == 1, "\n".join(s[:60] for s in seen)
    assert seen[0].startswith("loop: ")  # on the event loop, no thread
    statement = seen[0].removeprefix("loop: ")
    for part in ("api_tokens", "memberships", "identities", "INSERT INTO form_records"):
        assert part in statement
    assert statement.count("pg_advisory_xact_lock(") == 2  # the subject's, then the chain's
    assert "COMMIT" not in statement
    # psycopg keeps its conversion of statements up to 4 KiB only; 50 parameters at most
    assert len(statement) <= 4096
    assert saved.json()["instance"] == 2
    with session_scope(world.engine) as session:
        assert audit.verify_chain(session).ok
        # committed by the statement itself: a new connection sees it
        assert session.get(FormRecord, saved.json()["id"]) is not None


def test_a_revoked_token_is_refused_and_forgotten(
    world: World, client: TestClient, kept: str
) -> None:
    _revoke_coordinators_token(world)
    before = _counts(world)
    refused = _save(client, kept, bearer(world, "coordinator"))
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["error"]["message"]
    assert _counts(world) == before
    assert _kept(world, "coordinator", kept) is None


def test_an_expired_token_is_refused(world: World, client: TestClient, kept: str) -> None:
    with world.engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET expires_at = '2001-01-01 00:00:00'"))
    before = _counts(world)
    refused = _save(client, kept, bearer(world, "coordinator"))
    assert refused.status_code == 401, refused.text
    assert _counts(world) == before


def test_a_disabled_account_is_refused(world: World, client: TestClient, kept: str) -> None:
    with world.engine.begin() as conn:
        conn.execute(text("UPDATE users SET is_active = false WHERE username = 'coordinator'"))
    before = _counts(world)
    refused = _save(client, kept, bearer(world, "coordinator"))
    assert refused.status_code == 401, refused.text
    assert _counts(world) == before


@pytest.mark.parametrize(("role", "status"), [("monitor", 403), (None, 404)])
def test_a_changed_role_at_the_site_is_refused(
    world: World, client: TestClient, kept: str, role: str | None, status: int
) -> None:
    """The coordinator role is revoked; with a monitor role left the save is forbidden, with
    none the subject's site is not the user's (not found)."""
    with session_scope(world.engine) as session:
        user = accounts.get_user(session, "coordinator")
        site = accounts.get_site(session, "RIV")
        if role is not None:
            accounts.grant(session, user=user, site=site, role=role, actor="admin")
        for membership in [m for m in user.memberships if m.role == "coordinator"]:
            accounts.revoke(session, membership=membership, actor="admin", reason="moved")
    before = _counts(world)
    refused = _save(client, kept, bearer(world, "coordinator"))
    assert refused.status_code == status, refused.text
    assert _counts(world) == before


def test_a_withdrawn_subject_is_refused(world: World, client: TestClient, kept: str) -> None:
    headers = bearer(world, "coordinator")
    withdrawn = client.post(
        f"/api/v1/subjects/{kept}/status",
        json={"status": "withdrawn", "reason": "moved away"},
        headers=headers,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    before = _counts(world)
    refused = _save(client, kept, headers)
    assert refused.status_code == 409, refused.text
    assert _counts(world) == before


def test_changed_facts_are_read_again_and_kept_anew(
    world: World, client: TestClient, kept: str
) -> None:
    with world.engine.begin() as conn:
        conn.execute(
            text("UPDATE subjects SET enrolled_on = '2024-03-05' WHERE study_id = :s"), {"s": kept}
        )
    saved, seen = _statements(world, lambda: _save(client, kept, bearer(world, "coordinator")))
    assert saved.status_code == 200, saved.text
    # the confirmation failed, so the save ran again the ordinary way: one fresh read
    assert sum(statement.startswith(_ORDINARY_READ) for statement in seen) == 1
    again = _kept(world, "coordinator", kept)
    assert again is not None and str(again[1].enrolled_on) == "2024-03-05"
    with session_scope(world.engine) as session:
        assert audit.verify_chain(session).ok


def test_invalid_input_gets_the_ordinary_answer(
    world: World, client: TestClient, kept: str
) -> None:
    headers = bearer(world, "coordinator")
    before = _counts(world)
    bad = _save(client, kept, headers, data={**AE, "ctcae_grade": 9})
    assert bad.status_code == 422, bad.text
    assert [f["field"] for f in bad.json()["error"]["fields"]] == ["ctcae_grade"]
    malformed = _save(client, kept, headers, surprise=1)
    assert malformed.status_code == 422, malformed.text
    assert _counts(world) == before
    assert _kept(world, "coordinator", kept) is None  # forgotten: the next save reads again
    assert _save(client, kept, headers).status_code == 200
    assert _kept(world, "coordinator", kept) is not None


def test_invalid_input_with_a_revoked_token_is_refused_not_checked(
    world: World, client: TestClient, kept: str
) -> None:
    _revoke_coordinators_token(world)
    refused = _save(client, kept, bearer(world, "coordinator"), data={**AE, "ctcae_grade": 9})
    assert refused.status_code == 401, refused.text


def test_changing_a_saved_record_takes_the_ordinary_way(
    world: World, client: TestClient, kept: str
) -> None:
    headers = bearer(world, "coordinator")
    first = _save(client, kept, headers, instance=1)  # exists: the ordinary way refuses it
    assert first.status_code == 409, first.text
    changed = _save(
        client,
        kept,
        headers,
        data={**AE, "ctcae_grade": 2},
        instance=1,
        expected_version=1,
        reason="graded again",
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["version"], changed.json()["data"]["ctcae_grade"]) == (2, 2)


def test_concurrent_saves_of_one_subject_store_each_once(
    world: World, client: TestClient, kept: str
) -> None:
    """Twelve saves at once on kept facts: those whose statement met another's new instance
    start again the ordinary way; every form is stored once, with its own instance."""
    headers = bearer(world, "coordinator")

    async def many() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(
                *(
                    c.post(
                        f"/api/v1/subjects/{kept}/forms/adverse_event",
                        json={"event": "unscheduled", "data": {**AE, "term": f"t{i}"}},
                        headers=headers,
                    )
                    for i in range(12)
                )
            )

    world.app.state.ductal.database_concurrency = 6
    answers = asyncio.run(many())
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    with session_scope(world.engine) as session:
        stored = session.execute(
            select(FormRecord.instance, FormRecord.data).where(
                FormRecord.form_key == "adverse_event"
            )
        ).all()
        assert sorted(r.instance for r in stored) == list(range(1, 14))
        terms = sorted(r.data["term"] for r in stored if r.data["term"] != "pain")
        assert terms == sorted(f"t{i}" for i in range(12))
        assert audit.verify_chain(session).ok


def test_sqlite_stores_on_kept_facts_without_reading_them_again(
    world: World, client: TestClient, kept: str
) -> None:
    """SQLite: the check of the kept facts and the writes are plain sqlite3 statements in one
    transaction (begun IMMEDIATE: no other writer runs meanwhile); nothing is read afresh."""
    if _postgres(world):
        pytest.skip("the SQLite case")
    before = _counts(world)
    saved, seen = _statements(world, lambda: _save(client, kept, bearer(world, "coordinator")))
    assert saved.status_code == 200, saved.text
    assert seen == ["BEGIN IMMEDIATE"]  # the rest is not sent through SQLAlchemy
    assert saved.json()["instance"] == 2
    assert _counts(world) == (before[0] + 1, before[1] + 1)
    with session_scope(world.engine) as session:
        assert audit.verify_chain(session).ok


def _facts(study_id: str, site_id: int = 1) -> SubjectFacts:
    from ductal.protocols.loader import builtin_protocol

    return SubjectFacts(
        id=1,
        study_id=study_id,
        site_id=site_id,
        status="enrolled",
        arm=None,
        enrolled_on=None,
        protocol_version_id=1,
        protocol=builtin_protocol("lavage-observational"),
        identity=None,
    )


def test_recall_keeps_the_most_recently_used() -> None:
    recall = Recall(max_entries=2)
    coordinator = Principal(1, "c", "C", "en", roles={1: {"coordinator"}}, via="token")
    for study_id in ("A", "B"):
        recall.keep("h", coordinator, _facts(study_id), "enter_data", "postgresql")
    assert recall.get("h", "A") is not None  # A now the most recently used
    recall.keep("h", coordinator, _facts("C"), "enter_data", "sqlite")
    assert recall.get("h", "B") is None and len(recall) == 2
    kept = recall.get("h", "C")
    assert kept is not None and kept[1].unconfirmed is not None
    assert kept[1].unconfirmed.params["c_roles"] == '["coordinator"]'  # JSON for SQLite
    recall.forget("h", "C")
    assert recall.get("h", "C") is None


def test_recall_keeps_nothing_for_a_user_without_the_permission_there() -> None:
    recall = Recall()
    monitor = Principal(1, "m", "M", "en", roles={1: {"monitor"}}, via="token")
    recall.keep("h", monitor, _facts("A"), "enter_data", "postgresql")
    elsewhere = Principal(1, "c", "C", "en", roles={2: {"coordinator"}}, via="token")
    recall.keep("h", elsewhere, _facts("B"), "enter_data", "postgresql")
    assert len(recall) == 0


def test_a_database_failure_is_reported_not_run_again(
    world: World, client: TestClient, kept: str
) -> None:
    """Only refusals decided before anything is stored start the save again: after a database
    error the statement may have committed, and running it again could store the form twice."""
    if not _postgres(world):
        pytest.skip("the PostgreSQL case (on SQLite the transaction rolls back)")
    loop = world.app.state.ductal.loop_connections

    async def broken(query: str, params: Any) -> Any:
        raise psycopg.OperationalError("the connection broke")

    real, loop.fetch_one = loop.fetch_one, broken
    try:
        failed, seen = _statements(world, lambda: _save(client, kept, bearer(world, "coordinator")))
    finally:
        loop.fetch_one = real
    assert failed.status_code == 500
    assert seen == [s for s in seen if s.startswith("loop: ")]  # nothing ran the ordinary way
