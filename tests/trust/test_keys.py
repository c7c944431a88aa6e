"""Vault key rotation: every identity re-encrypted under the new key, in one audited transaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from ductal import audit, keys, records
from ductal.config import load_settings
from ductal.db import make_engine, session_scope
from ductal.errors import ConfigError
from ductal.models import AuditEntry, Identity
from ductal.vault import Vault
from tests.trust.conftest import KNOWN_NAME, Study, build_study, run


def _identities(study: Study, vault: Vault) -> dict[str, dict[str, object]]:
    with session_scope(study.engine) as session:
        subjects = records.list_subjects(session)
        return {
            s.study_id: records.get_identity(session, subject=s, vault=vault)
            for s in subjects
            if s.identity is not None
        }


def test_rotation_re_encrypts_everything_under_the_new_key(study: Study) -> None:
    before = _identities(study, study.vault)
    assert before[study.known_study_id]["name"] == KNOWN_NAME
    with session_scope(study.engine) as session:
        count_before = session.scalar(select(func.count()).select_from(Identity))
        old_ciphertexts = set(session.scalars(select(Identity.ciphertext)))
    new_key = keys.new_vault_key()
    current = study.vault_key
    with session_scope(study.engine) as session:
        done = keys.rotate_identities(session, current_key=current, new_key=new_key, actor="ops")
    assert done.identities == count_before == len(before)
    assert _identities(study, Vault(new_key)) == before  # the new key alone reads them all
    with pytest.raises(ConfigError, match="cannot decrypt"):
        _identities(study, Vault(current))  # the old key alone reads none
    with session_scope(study.engine) as session:
        assert session.scalar(select(func.count()).select_from(Identity)) == count_before
        assert not old_ciphertexts & set(session.scalars(select(Identity.ciphertext)))
        entry = audit.chain_head(session)
        assert audit.verify_chain(session).ok
    assert entry is not None and entry.action == "rotate_key"
    trail = repr((entry.before, entry.after, entry.reason))
    assert KNOWN_NAME not in trail and new_key not in trail and current not in trail


def test_wrong_current_key_changes_nothing(study: Study) -> None:
    with session_scope(study.engine) as session:
        before = list(session.scalars(select(Identity.ciphertext).order_by(Identity.id)))
        entries = session.scalar(select(func.count()).select_from(AuditEntry))
    with (
        pytest.raises(ConfigError, match="does not decrypt"),
        session_scope(study.engine) as session,
    ):
        keys.rotate_identities(
            session, current_key=keys.new_vault_key(), new_key=keys.new_vault_key(), actor="ops"
        )
    with session_scope(study.engine) as session:
        assert list(session.scalars(select(Identity.ciphertext).order_by(Identity.id))) == before
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == entries


def test_cli_rotation_in_development_updates_the_key_file(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    study = build_study(engine, settings.vault_key, n_subjects=1)
    key_file = tmp_path / "new.key"
    code, out, err = run(capsys, "keys", "rotate", "--key-file", str(key_file))
    assert code == 0, err
    assert "re-encrypted 2 identity records" in out and "vault.key" in out
    new_key = key_file.read_text().strip()
    assert new_key not in out
    assert load_settings().vault_key == new_key != settings.vault_key
    assert _identities(study, Vault(new_key))[study.known_study_id]["name"] == KNOWN_NAME
    engine.dispose()
