"""The demo study: sites, users and a synthetic cohort on every built-in protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine, func, select

from ductal import accounts, audit, records
from ductal.db import session_scope
from ductal.errors import Conflict, NotFound
from ductal.models import Site, Subject
from ductal.protocols.loader import builtin_protocols
from ductal.signatures import hash_password
from ductal.synthetic import ACTOR, CohortSummary, generate_cohort
from ductal.vault import Vault

DEMO_SITES = (
    ("RIV", "Riverside Breast Centre (demo)", "+00 555 0100 0001"),
    ("HIL", "Hillside University Hospital (demo)", "+00 555 0100 0002"),
    ("LAK", "Lakeside Women's Clinic (demo)", "+00 555 0100 0003"),
)
DEMO_PASSWORD = "demo-password-2016"  # synthetic demo only: every demo user signs in with it
DEMO_USERS = (
    ("admin", "Demo Administrator", "admin", ("RIV", "HIL", "LAK")),
    ("coordinator", "Demo Coordinator", "coordinator", ("RIV",)),
    ("investigator", "Demo Investigator", "investigator", ("RIV", "HIL")),
    ("monitor", "Demo Monitor", "monitor", ("RIV", "HIL", "LAK")),
    ("statistician", "Demo Statistician", "statistician", ("RIV", "HIL", "LAK")),
)


@dataclass
class DemoSummary:
    cohorts: list[CohortSummary] = field(default_factory=list)
    audit_entries: int = 0
    chain_head: str = ""

    @property
    def subjects(self) -> int:
        return sum(c.screened for c in self.cohorts)


def build_demo(
    engine: Engine,
    *,
    vault: Vault,
    patients_per_protocol: int = 60,
    seed: int = 20161101,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> DemoSummary:
    """Fill an empty, migrated database with the demo study and return what was written.

    ``progress(label, total)`` may return a callback advanced once per subject.
    """
    with session_scope(engine) as session:
        if session.scalar(select(func.count()).select_from(Subject)):
            raise Conflict("the database already holds subjects; use an empty database")
        for proto in builtin_protocols():
            records.register_protocol(session, protocol=proto, actor=ACTOR)
        sites = {}
        for code, name, phone in DEMO_SITES:
            existing = session.scalar(select(Site).where(Site.code == code))
            sites[code] = existing or accounts.create_site(
                session, code=code, name=name, contact_phone=phone, actor=ACTOR
            )
        for username, full_name, role, site_codes in DEMO_USERS:
            try:
                user = accounts.get_user(session, username)
            except NotFound:
                user = accounts.create_user(
                    session,
                    username=username,
                    full_name=full_name,
                    actor=ACTOR,
                    password_hash=hash_password(DEMO_PASSWORD),
                )
            for code in site_codes:
                accounts.grant(session, user=user, site=sites[code], role=role, actor=ACTOR)
        site_ids = [s.id for s in sites.values()]

    summary = DemoSummary()
    children = np.random.SeedSequence(seed).spawn(len(builtin_protocols()))
    for proto, child in zip(builtin_protocols(), children, strict=True):
        tick = progress(proto.id, patients_per_protocol) if progress else None
        with session_scope(engine) as session:
            site_rows = [session.get_one(Site, i) for i in site_ids]
            cohort = generate_cohort(
                session,
                protocol_id=proto.id,
                n_subjects=patients_per_protocol,
                rng=np.random.default_rng(child),
                sites=site_rows,
                vault=vault,
                progress=tick,
            )
        summary.cohorts.append(cohort)
    with session_scope(engine) as session:
        report = audit.verify_chain(session)
    summary.audit_entries = report.entries
    summary.chain_head = report.head
    return summary
