"""Every report and export manifest carries the audit chain head, so a copy can be checked later."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from ductal import accounts, audit, records
from ductal.backup import check_stamp
from ductal.db import session_scope
from ductal.exchange.api import export_redcap
from ductal.procedure.report import operator_log_html
from ductal.protocols.loader import builtin_protocol
from ductal.reports.build import build_report
from ductal.synthetic import generate_cohort
from ductal.vault import Vault


def _study(engine: Engine, vault: Vault) -> str:
    with session_scope(engine) as session:
        records.register_protocol(
            session, protocol=builtin_protocol("lavage-observational"), actor="setup"
        )
        site = accounts.create_site(session, code="EV", name="Evidence site", actor="setup")
        generate_cohort(
            session,
            protocol_id="lavage-observational",
            n_subjects=6,
            rng=np.random.default_rng(5),
            sites=[site],
            vault=vault,
        )
        head = audit.chain_head(session)
        assert head is not None
        return head.hash


def test_export_manifest_and_report_carry_the_chain_head(
    engine: Engine, vault: Vault, tmp_path: Path
) -> None:
    head = _study(engine, vault)
    with session_scope(engine) as session:
        result = export_redcap(session, protocol_id="lavage-observational", out=tmp_path / "rc")
    stamp = result.manifest["evidence"]
    assert stamp["audit_chain_head"] == head
    on_disk = json.loads((tmp_path / "rc" / "manifest.json").read_text())
    assert on_disk["evidence"] == stamp

    report = build_report(engine, tmp_path / "report", pdf=False, workers=1)
    evidence = json.loads((tmp_path / "report" / "evidence.json").read_text())
    assert evidence["audit_chain_head"] == head
    assert head in report.html.read_text()
    with session_scope(engine) as session:
        assert check_stamp(session, evidence).ok
        log = operator_log_html(session, protocol_id="lavage-observational")
    assert head in log
