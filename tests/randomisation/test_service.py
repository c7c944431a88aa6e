"""The randomisation service on SQLite and PostgreSQL: lists, assignment, concealment, audit."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ductal import accounts, audit, records
from ductal.db import session_scope
from ductal.errors import Conflict, NotFound, PermissionDenied, ValidationError
from ductal.models import AuditEntry, Event, RandomisationList, RandomisationSlot
from ductal.protocols.loader import builtin_protocol
from ductal.randomisation import lists, service
from ductal.randomisation.minimisation import minimise
from tests.randomisation.conftest import ADAPTIVE, MINIMISED, NI, SMALL, enrolled, screening

SEED = 20181101


def _entries(session: Session, **where: str) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.id)
    for key, value in where.items():
        stmt = stmt.where(getattr(AuditEntry, key) == value)
    return list(session.scalars(stmt))


def test_randomise_takes_the_next_slot_of_the_subjects_stratum(study: Engine) -> None:
    severities = ["mild", "severe", "mild", "mild", "severe", "mild", "mild", "mild", "mild"]
    with session_scope(study) as session:
        got = []
        for severity in severities:
            subject = enrolled(session, NI, severity)
            got.append(service.randomise(session, subject=subject, actor="coord", seed=SEED))
    # the arms are the list regenerated from the seed and the stratum, in position order
    for label in ("severity=mild", "severity=severe"):
        expected = lists.allocation_list(
            lists.derive_seed(SEED, label), ["lavage", "steroid"], [1, 1], [4, 6], min_slots=140
        )
        mine = [a for a in got if a.stratum == label]
        assert [a.position for a in mine] == list(range(1, len(mine) + 1))
        assert [a.arm for a in mine] == [s.arm for s in expected[: len(mine)]]
        assert [a.block for a in mine] == [s.block for s in expected[: len(mine)]]
    with session_scope(study) as session:
        subject = records.get_subject(session, got[0].study_id)
        assert subject.arm == got[0].arm and subject.stratum == "severity=mild"
        # the arm's own visits were scheduled (lavage sessions or the drug course start)
        keys = {
            e.event_key
            for e in session.scalars(select(Event).where(Event.subject_id == subject.id))
        }
        arm_event = {"lavage": "lavage", "steroid": "treatment_start"}
        assert arm_event[subject.arm] in keys
        assert arm_event[other_arm(subject.arm)] not in keys
        stored = session.scalars(select(RandomisationList).order_by(RandomisationList.id)).all()
        assert [(x.stratum, x.method, x.seed) for x in stored] == [
            ("severity=mild", "permuted_blocks", str(SEED)),
            ("severity=severe", "permuted_blocks", str(SEED)),
        ]
        assert audit.verify_chain(session).ok


def other_arm(arm: str) -> str:
    return "steroid" if arm == "lavage" else "lavage"


def test_the_audit_names_the_slot_but_never_an_upcoming_arm(study: Engine) -> None:
    with session_scope(study) as session:
        subject = enrolled(session, NI, "severe")
        done = service.randomise(session, subject=subject, actor="coord", seed=SEED)
        generated = _entries(session, entity_type="randomisation_list")
        assigned = _entries(session, entity_type="randomisation_slot")
        arm_entries = _entries(session, action="randomise")
    assert len(generated) == 1
    after = generated[0].after or {}
    assert after["slots"] >= 140 and "seed" not in after and "arms" not in after
    assert after["seed_sha256"] == lists_digest(SEED)
    assert len(assigned) == 1
    entry = assigned[0]
    assert entry.actor == "coord" and entry.subject_study_id == done.study_id
    assert entry.after is not None
    assert {k: entry.after[k] for k in ("list_id", "position", "block", "arm", "stratum")} == {
        "list_id": done.list_id,
        "position": 1,
        "block": 1,
        "arm": done.arm,
        "stratum": "severity=severe",
    }
    # nothing about any other slot is written anywhere in the trail
    assert len(arm_entries) == 1 and (arm_entries[0].after or {})["arm"] == done.arm


def lists_digest(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def test_a_subject_is_randomised_once_and_only_when_enrolled(study: Engine) -> None:
    with session_scope(study) as session:
        subject = enrolled(session, NI)
        service.randomise(session, subject=subject, actor="coord")
        with pytest.raises(Conflict, match="already randomised"):
            service.randomise(session, subject=subject, actor="coord")
    with session_scope(study) as session:
        screened = records.screen(
            session,
            protocol_id=NI,
            site=accounts.get_site(session, "RIV"),
            screening={**screening(NI), "consent_signed": 0, "consent_date": None},
            actor="coord",
        )
        with pytest.raises(Conflict, match="enrol before randomising"):
            service.randomise(session, subject=screened, actor="coord")


def test_a_single_arm_protocol_is_not_randomised(engine: Engine) -> None:
    with session_scope(engine) as session:
        records.register_protocol(
            session, protocol=builtin_protocol("lavage-observational"), actor="setup"
        )
        with pytest.raises(Conflict, match="not a randomised protocol"):
            service.generate_lists(
                session, protocol_id="lavage-observational", actor="stat", role="statistician"
            )


def test_a_list_that_runs_out_is_extended_with_the_blocks_that_follow(study: Engine) -> None:
    with session_scope(study) as session:
        got = [
            service.randomise(session, subject=enrolled(session, SMALL), actor="c", seed=5)
            for _ in range(15)
        ]
        slots = session.scalars(
            select(RandomisationSlot).order_by(RandomisationSlot.position)
        ).all()
    expected = lists.allocation_list(
        lists.derive_seed(5, "severity=mild"), ["lavage", "steroid"], [1, 1], [4, 6], min_slots=15
    )
    assert [a.arm for a in got] == [s.arm for s in expected[:15]]
    assert [s.position for s in slots] == list(range(1, len(slots) + 1))
    assert len(slots) > 15
    for block in {s.block for s in slots}:
        counts = Counter(s.arm for s in slots if s.block == block)
        assert counts["lavage"] == counts["steroid"]


def test_generate_lists_needs_the_statistician_and_is_never_repeated(study: Engine) -> None:
    with session_scope(study) as session:
        with pytest.raises(PermissionDenied):
            service.generate_lists(session, protocol_id=NI, actor="c", role="coordinator")
        made = service.generate_lists(
            session, protocol_id=NI, actor="stat", role="statistician", seed=77
        )
        assert [(m.stratum, m.used) for m in made] == [("severity=mild", 0), ("severity=severe", 0)]
        assert all(m.slots >= 140 for m in made)
        with pytest.raises(Conflict, match="never regenerated"):
            service.generate_lists(session, protocol_id=NI, actor="stat", role="statistician")
        with pytest.raises(ValidationError):
            service.generate_lists(
                session, protocol_id=ADAPTIVE, actor="stat", role="statistician", seed=-3
            )
        # randomisation then uses the generated list, not a new seed
        done = service.randomise(session, subject=enrolled(session, NI), actor="c", seed=1)
        first = lists.allocation_list(
            lists.derive_seed(77, "severity=mild"),
            ["lavage", "steroid"],
            [1, 1],
            [4, 6],
            min_slots=1,
        )[0]
        assert (done.list_id, done.position, done.arm) == (made[0].list_id, 1, first.arm)
        summary = service.list_summaries(session, protocol_id=NI)
        assert [m.used for m in summary] == [1, 0]


def test_only_the_unblinded_statistician_may_export_and_each_export_is_audited(
    study: Engine,
) -> None:
    with session_scope(study) as session:
        subjects = [enrolled(session, NI, s) for s in ("mild", "severe", "mild")]
        done = [service.randomise(session, subject=s, actor="c", seed=3) for s in subjects]
    for role, unblinded in (("coordinator", True), ("statistician", False), ("monitor", False)):
        with session_scope(study) as session, pytest.raises(PermissionDenied, match="concealed"):
            service.export_list(
                session, protocol_id=NI, actor="someone", role=role, unblinded=unblinded
            )
    with session_scope(study) as session:
        rows = service.export_list(
            session, protocol_id=NI, actor="stat", role="statistician", unblinded=True
        )
        mild = service.export_list(
            session,
            protocol_id=NI,
            actor="stat",
            role="statistician",
            unblinded=True,
            stratum="severity=mild",
            reason="DMC report",
        )
        exports = _entries(session, action="export")
    assert len(rows) == sum(s.slots for s in _summaries(study))
    used = {r.study_id: r.arm for r in rows if r.study_id}
    assert used == {d.study_id: d.arm for d in done}
    assert {r.stratum for r in mild} == {"severity=mild"}
    assert [(e.actor, (e.after or {})["slots"], e.reason) for e in exports] == [
        ("stat", len(rows), None),
        ("stat", len(mild), "DMC report"),
    ]
    with session_scope(study) as session, pytest.raises(NotFound):
        service.export_list(
            session, protocol_id=ADAPTIVE, actor="stat", role="statistician", unblinded=True
        )


def _summaries(engine: Engine) -> list[service.ListSummary]:
    with session_scope(engine) as session:
        return service.list_summaries(session, protocol_id=NI)


def test_emergency_unblinding_needs_a_reason_and_is_audited(study: Engine) -> None:
    with session_scope(study) as session:
        subject = enrolled(session, NI)
        done = service.randomise(session, subject=subject, actor="c")
        with pytest.raises(ValidationError, match="reason"):
            service.unblind(session, subject=subject, actor="dr", reason="  ")
        arm = service.unblind(session, subject=subject, actor="dr", reason="anaphylaxis")
        entries = _entries(session, action="unblind")
        other = enrolled(session, NI)
        with pytest.raises(Conflict, match="not randomised"):
            service.unblind(session, subject=other, actor="dr", reason="x")
    assert arm == done.arm
    assert [(e.actor, e.reason, e.subject_study_id) for e in entries] == [
        ("dr", "anaphylaxis", done.study_id)
    ]


def test_adaptive_lists_follow_the_open_arms(study: Engine) -> None:
    with session_scope(study) as session:
        three = [
            service.randomise(session, subject=enrolled(session, ADAPTIVE), actor="c", seed=9)
            for _ in range(6)
        ]
        two = [
            service.randomise(
                session,
                subject=enrolled(session, ADAPTIVE),
                actor="c",
                active_arms=["c_methotrexate", "b_prednisolone"],
            )
            for _ in range(8)
        ]
        one = service.randomise(
            session, subject=enrolled(session, ADAPTIVE), actor="c", active_arms=["c_methotrexate"]
        )
        keys = [x.stratum for x in service.list_summaries(session, protocol_id=ADAPTIVE)]
        sizes = Counter(
            s.block
            for s in session.scalars(
                select(RandomisationSlot)
                .join(RandomisationList)
                .where(RandomisationList.stratum == "all|arms=b_prednisolone+c_methotrexate")
            )
        )
    # blocks are 3 or 6 long, so the first six positions are whole blocks: two of each arm
    assert Counter(a.arm for a in three) == Counter(
        {"a_supportive": 2, "b_prednisolone": 2, "c_methotrexate": 2}
    )
    assert {a.arm for a in two} <= {"b_prednisolone", "c_methotrexate"}
    assert one.arm == "c_methotrexate"
    assert keys == [
        "all",
        "all|arms=b_prednisolone+c_methotrexate",
        "all|arms=c_methotrexate",
    ]
    # protocol sizes 3 and 6 do not all fit two arms: blocks of 4 and 6 are used instead
    assert set(sizes.values()) <= {4, 6}


def test_closed_arms_are_kept_in_the_audit_trail_and_respected(study: Engine) -> None:
    with session_scope(study) as session:
        with pytest.raises(Conflict, match="not an adaptive protocol"):
            service.close_arm(session, protocol_id=NI, arm="steroid", actor="dmc", reason="x")
        with pytest.raises(ValidationError, match="reason"):
            service.close_arm(
                session, protocol_id=ADAPTIVE, arm="a_supportive", actor="dmc", reason=""
            )
        with pytest.raises(ValidationError, match="unknown arm"):
            service.close_arm(session, protocol_id=ADAPTIVE, arm="z", actor="dmc", reason="x")
        still = service.close_arm(
            session,
            protocol_id=ADAPTIVE,
            arm="a_supportive",
            actor="dmc",
            reason="interim look 1: inadequate response",
        )
        assert still == ["b_prednisolone", "c_methotrexate"]
        with pytest.raises(Conflict, match="already closed"):
            service.close_arm(
                session, protocol_id=ADAPTIVE, arm="a_supportive", actor="dmc", reason="x"
            )
        service.close_arm(
            session, protocol_id=ADAPTIVE, arm="b_prednisolone", actor="dmc", reason="look 2"
        )
        with pytest.raises(Conflict, match="no open arm"):
            service.close_arm(
                session, protocol_id=ADAPTIVE, arm="c_methotrexate", actor="dmc", reason="x"
            )
        assert service.closed_arms(session, ADAPTIVE) == {"a_supportive", "b_prednisolone"}
        arms = [
            service.randomise(session, subject=enrolled(session, ADAPTIVE), actor="c").arm
            for _ in range(4)
        ]
        with pytest.raises(ValidationError, match="arms cannot be dropped"):
            service.randomise(
                session, subject=enrolled(session, NI), actor="c", active_arms=["lavage"]
            )
        with pytest.raises(ValidationError, match="unknown arm"):
            service.randomise(
                session, subject=enrolled(session, ADAPTIVE), actor="c", active_arms=["nope"]
            )
    assert arms == ["c_methotrexate"] * 4


def _replay(
    rows: Sequence[tuple[Mapping[str, str], str]], seed: int, probability: float
) -> list[str]:
    arms: list[str] = []
    done: list[tuple[Mapping[str, str], str]] = []
    for position, (levels, stored_arm) in enumerate(rows, start=1):
        rng = np.random.default_rng(lists.derive_seed(seed, "minimisation", position))
        choice = minimise(
            arms=["lavage", "steroid"],
            previous=done,
            new=levels,
            probability=probability,
            rng=rng,
            ratios={"lavage": 1, "steroid": 1},
        )
        arms.append(choice.arm)
        done.append((levels, stored_arm))
    return arms


def test_minimisation_is_reproducible_from_the_seed_and_order_and_balances(study: Engine) -> None:
    rng = np.random.default_rng(12)
    severities = [str(s) for s in rng.choice(["mild", "severe"], size=40, p=[0.7, 0.3])]
    with session_scope(study) as session:
        done = [
            service.randomise(session, subject=enrolled(session, MINIMISED, s), actor="c", seed=31)
            for s in severities
        ]
        entries = _entries(session, entity_type="randomisation_slot")
    assert [d.method for d in done] == ["minimisation"] * 40
    assert [d.position for d in done] == list(range(1, 41))
    rows = [({"severity": s}, d.arm) for s, d in zip(severities, done, strict=True)]
    assert _replay(rows, 31, 0.8) == [d.arm for d in done]
    for level in ("mild", "severe"):
        counts = Counter(d.arm for s, d in zip(severities, done, strict=True) if s == level)
        assert abs(counts["lavage"] - counts["steroid"]) <= 3
    first = entries[0].after or {}
    assert first["method"] == "minimisation" and first["imbalance"] == "range"
    assert set(first["scores"]) == {"lavage", "steroid"}


def test_a_stratum_value_that_is_missing_is_reported(study: Engine) -> None:
    with session_scope(study) as session:
        subject = enrolled(session, NI)
        record = records.subject_records(session, subject, "screening")[0]
        record.data = {**record.data, "severity_group": None}
        session.flush()
        with pytest.raises(ValidationError) as info:
            service.randomise(session, subject=subject, actor="c")
    assert info.value.problems[0].field == "screening.severity_group"


def test_stratum_labels_round_trip() -> None:
    levels = {"severity": "mild", "site": "RIV"}
    assert service.stratum_label(levels) == "severity=mild;site=RIV"
    assert service.parse_stratum_label("severity=mild;site=RIV") == levels
    assert service.stratum_label({}) == "all"
    assert service.parse_stratum_label("all") == {}
    assert service.parse_stratum_label(None) == {}
