"""``ductal users add|passwd|token``: credentials made on the command line work in the web app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ductal import accounts
from ductal.cli import main
from ductal.config import load_settings
from ductal.db import session_scope
from ductal.web.app import create_app
from tests.web.conftest import login


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``ductal`` entry point; return the exit code, stdout and stderr."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_users_add_passwd_token(
    env: dict[str, str], engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with session_scope(engine) as s:
        accounts.create_site(s, code="RIV", name="Riverside", actor="test")
    code, out, _ = run(
        capsys,
        "users",
        "add",
        "alice",
        "--name",
        "Alice Li",
        "--site",
        "RIV",
        "--role",
        "monitor",
        "--password",
        "first passphrase",
    )
    assert code == 0 and "alice created (monitor at RIV)" in out
    assert run(capsys, "users", "passwd", "alice", "--password", "second passphrase")[0] == 0
    code, out, _ = run(capsys, "users", "token", "alice", "--name", "nightly export")
    token = out.strip().splitlines()[-1]
    assert code == 0 and token.startswith("dtl_")
    code, _, err = run(capsys, "users", "passwd", "alice", "--password", "short")
    assert code == 1 and "at least 10 characters" in err
    app = create_app(load_settings(), engine=engine)
    with TestClient(app) as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me == {
            "username": "alice",
            "full_name": "Alice Li",
            "language": "en",
            "roles": {"RIV": ["monitor"]},
        }
        login(client, "alice", "second passphrase")
