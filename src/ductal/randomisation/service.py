"""The live randomisation service: concealed allocation lists and the moment of assignment.

Each protocol has one master seed. A stratified permuted-block protocol keeps one allocation list
per stratum (and, in an adaptive trial, per set of open arms), generated from the master seed and
the list's key when first needed; subjects take the lowest free position. A minimisation protocol
keeps one list whose slots are written as subjects arrive, the arm chosen by Pocock–Simon
minimisation with the n-th random draw derived from the seed and n.

Concealment: the arms of unused slots are never returned or audited; only a caller who declares
the unblinded statistician role may list or export a list, and every export is audited.

Concurrency: the whole assignment runs under the audit chain's write lock (BEGIN IMMEDIATE on
SQLite, a transaction-scoped advisory lock on PostgreSQL), the list row is locked with
SELECT … FOR UPDATE, and a slot is claimed with a conditional UPDATE (``… WHERE subject_id IS
NULL``) that is retried if another transaction took it first; the unique ``subject_id`` and
(list, position) constraints are the last line of defence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ductal import audit, records
from ductal.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationError
from ductal.models import (
    AuditEntry,
    FormRecord,
    RandomisationList,
    RandomisationSlot,
    Subject,
    utcnow,
)
from ductal.protocols.model import Protocol
from ductal.randomisation import lists
from ductal.randomisation.minimisation import IMBALANCE_MEASURES, Imbalance, minimise

STATISTICIAN = "statistician"
ALL_STRATA = "all"
MINIMISATION_LIST = "minimisation"
_ARMS_MARK = "|arms="
_CLAIM_ATTEMPTS = 20
_ARM_ENTITY = "randomisation_arm"
_KEY_LENGTH = 128  # RandomisationList.stratum and Subject.stratum


@dataclass(frozen=True)
class Assignment:
    """The arm a subject was randomised to, and the slot that gave it."""

    study_id: str
    arm: str
    stratum: str
    method: str
    list_id: int
    position: int
    block: int
    assigned_by: str
    assigned_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["assigned_at"] = self.assigned_at.isoformat()
        return out


@dataclass(frozen=True)
class ListSummary:
    """An allocation list described without its arms (safe to show a blinded user)."""

    list_id: int
    protocol_id: str
    stratum: str
    method: str
    created_by: str
    created_at: dt.datetime
    slots: int
    used: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class SlotRow:
    """One slot of an exported allocation list (unblinded)."""

    list_id: int
    stratum: str
    method: str
    position: int
    block: int
    arm: str
    study_id: str | None
    assigned_by: str | None
    assigned_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["assigned_at"] = self.assigned_at.isoformat() if self.assigned_at else None
        return out


# --- strata ----------------------------------------------------------------------------------


def stratum_label(levels: Mapping[str, str]) -> str:
    """Return the stored label of a stratum: ``factor=level`` pairs joined by ``;`` (or ``all``)."""
    if not levels:
        return ALL_STRATA
    return ";".join(f"{key}={levels[key]}" for key in levels)


def parse_stratum_label(label: str | None) -> dict[str, str]:
    """Return the factor levels of a stored stratum label (empty for ``all`` or None)."""
    if not label or label == ALL_STRATA:
        return {}
    pairs = (part.split("=", 1) for part in label.split(";") if "=" in part)
    return {key: value for key, value in pairs}


def subject_levels(session: Session, subject: Subject, protocol: Protocol) -> dict[str, str]:
    """Return the subject's level of each stratification factor, read from its saved forms."""
    levels: dict[str, str] = {}
    problems: list[Problem] = []
    for factor in protocol.strata:
        record = session.scalar(
            select(FormRecord)
            .where(FormRecord.subject_id == subject.id, FormRecord.form_key == factor.form)
            .order_by(FormRecord.id.desc())
            .limit(1)
        )
        where = f"{factor.form}.{factor.field}"
        if record is None:
            problems.append(Problem(where, f"form {factor.form!r} is not saved yet"))
            continue
        value = record.data.get(factor.field)
        if value is None or str(value) not in factor.levels:
            problems.append(
                Problem(
                    where,
                    f"is {value!r}; stratum {factor.key!r} needs one of {', '.join(factor.levels)}",
                )
            )
            continue
        levels[factor.key] = str(value)
    if problems:
        raise ValidationError(f"cannot stratify subject {subject.study_id}", problems=problems)
    return levels


def all_strata(protocol: Protocol) -> list[dict[str, str]]:
    """Return every combination of the protocol's stratum levels, in protocol order."""
    keys = [s.key for s in protocol.strata]
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(s.levels for s in protocol.strata))
    ]


# --- arms --------------------------------------------------------------------------------------


def _arm_key(protocol_id: str, arm: str) -> str:
    return f"{protocol_id}:{arm}"


def closed_arms(session: Session, protocol_id: str) -> set[str]:
    """Return the arms of ``protocol_id`` closed to randomisation (by :func:`close_arm`)."""
    rows = session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.entity_type == _ARM_ENTITY,
            AuditEntry.entity_id.startswith(f"{protocol_id}:", autoescape=True),
        )
        .order_by(AuditEntry.id)
    )
    closed: set[str] = set()
    for row in rows:
        arm = row.entity_id.split(":", 1)[1]
        if row.action == "close":
            closed.add(arm)
        elif row.action == "reopen":
            closed.discard(arm)
    return closed


def close_arm(
    session: Session, *, protocol_id: str, arm: str, actor: str, reason: str
) -> list[str]:
    """Close ``arm`` of an adaptive protocol to new subjects; return the arms still open.

    The decision (usually the data monitoring committee's, after ``ductal design interim``) is
    kept in the audit trail, which later randomisations read.
    """
    protocol = records.protocol_of(records.latest_protocol_version(session, protocol_id))
    if protocol.design != "adaptive":
        raise Conflict(f"{protocol_id} is not an adaptive protocol; its arms cannot be closed")
    _check_arms(protocol, [arm])
    if not reason.strip():
        raise ValidationError("a reason is required", problems=[Problem("reason", "is required")])
    audit.lock_chain(session)
    closed = closed_arms(session, protocol_id)
    if arm in closed:
        raise Conflict(f"arm {arm} of {protocol_id} is already closed")
    still_open = [a.key for a in protocol.arms if a.key not in closed and a.key != arm]
    if not still_open:
        raise Conflict(f"closing {arm} would leave {protocol_id} with no open arm")
    audit.record(
        session,
        actor=actor,
        action="close",
        entity_type=_ARM_ENTITY,
        entity_id=_arm_key(protocol_id, arm),
        after={"protocol": protocol_id, "arm": arm, "open_arms": still_open},
        reason=reason,
    )
    return still_open


def _check_arms(protocol: Protocol, arms: Iterable[str]) -> None:
    known = {a.key for a in protocol.arms}
    bad = [a for a in arms if a not in known]
    if bad:
        raise ValidationError(
            "unknown arm",
            problems=[
                Problem(
                    "arms", f"{a!r} is not an arm of {protocol.id} ({', '.join(sorted(known))})"
                )
                for a in bad
            ],
        )


def open_arms(
    session: Session, protocol: Protocol, active_arms: Sequence[str] | None = None
) -> list[str]:
    """Return the arms that may receive the next subject, in protocol order.

    ``active_arms`` (adaptive trials only) overrides the arms closed with :func:`close_arm`.
    """
    if active_arms is None:
        closed = closed_arms(session, protocol.id) if protocol.design == "adaptive" else set()
        return [a.key for a in protocol.arms if a.key not in closed]
    wanted = list(dict.fromkeys(active_arms))
    if not wanted:
        raise ValidationError("no arms", problems=[Problem("active_arms", "name at least one")])
    _check_arms(protocol, wanted)
    ordered = [a.key for a in protocol.arms if a.key in wanted]
    if protocol.design != "adaptive" and len(ordered) != len(protocol.arms):
        raise ValidationError(
            "arms cannot be dropped",
            problems=[Problem("active_arms", f"{protocol.id} is not an adaptive protocol")],
        )
    return ordered


# --- lists -----------------------------------------------------------------------------------


def _list_key(protocol: Protocol, stratum: str, arms: Sequence[str]) -> str:
    if protocol.randomisation.method == "minimisation":
        return MINIMISATION_LIST
    if len(arms) == len(protocol.arms):
        return stratum
    return f"{stratum}{_ARMS_MARK}{'+'.join(arms)}"


def _master_seed(session: Session, protocol_id: str) -> int | None:
    stored = session.scalar(
        select(RandomisationList.seed)
        .where(RandomisationList.protocol_id == protocol_id)
        .order_by(RandomisationList.id)
        .limit(1)
    )
    return None if stored is None else int(stored)


def _seed_digest(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def _ratios(protocol: Protocol, arms: Sequence[str]) -> list[int]:
    return [protocol.arm(a).ratio for a in arms]


def _sizes(protocol: Protocol, arms: Sequence[str]) -> list[int]:
    return lists.usable_block_sizes(
        protocol.randomisation.block_sizes,
        _ratios(protocol, arms),
        adjust=len(arms) != len(protocol.arms),
    )


def _arms_of_key(protocol: Protocol, key: str) -> list[str]:
    if _ARMS_MARK in key:
        return key.split(_ARMS_MARK, 1)[1].split("+")
    return [a.key for a in protocol.arms]


def _append_blocks(
    session: Session, protocol: Protocol, lst: RandomisationList, *, min_new: int
) -> int:
    """Add the blocks that follow the list's last one (at least ``min_new`` slots); return count."""
    last_block, last_position = session.execute(
        select(
            func.coalesce(func.max(RandomisationSlot.block), 0),
            func.coalesce(func.max(RandomisationSlot.position), 0),
        ).where(RandomisationSlot.list_id == lst.id)
    ).one()
    arms = _arms_of_key(protocol, lst.stratum)
    generated = lists.allocation_list(
        lists.derive_seed(int(lst.seed), lst.stratum),
        arms,
        _ratios(protocol, arms),
        _sizes(protocol, arms),
        min_slots=int(last_position) + min_new,
        first_block=int(last_block) + 1,
    )
    session.add_all(
        RandomisationSlot(list_id=lst.id, position=s.position, block=s.block, arm=s.arm)
        for s in generated
    )
    session.flush()
    return len(generated)


def _create_list(
    session: Session, protocol: Protocol, key: str, *, seed: int, actor: str
) -> RandomisationList:
    method = protocol.randomisation.method
    lst = RandomisationList(
        protocol_id=protocol.id, stratum=key, method=method, seed=str(seed), created_by=actor
    )
    session.add(lst)
    session.flush()
    slots = 0
    if method == "permuted_blocks":
        slots = _append_blocks(session, protocol, lst, min_new=protocol.target_enrolment)
    audit.record(
        session,
        actor=actor,
        action="generate",
        entity_type="randomisation_list",
        entity_id=lst.id,
        # the seed would reveal the list: only its digest is kept in the trail
        after={
            "protocol": protocol.id,
            "stratum": key,
            "method": method,
            "slots": slots,
            "seed_sha256": _seed_digest(seed),
        },
    )
    return lst


def _get_list(
    session: Session, protocol_id: str, key: str, *, lock: bool
) -> RandomisationList | None:
    stmt = select(RandomisationList).where(
        RandomisationList.protocol_id == protocol_id, RandomisationList.stratum == key
    )
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def _randomised_protocol(session: Session, protocol_id: str) -> Protocol:
    protocol = records.protocol_of(records.latest_protocol_version(session, protocol_id))
    if not protocol.is_randomised or protocol.randomisation.method == "none":
        raise Conflict(f"{protocol_id} is not a randomised protocol")
    return protocol


def _require_statistician(role: str) -> None:
    if role != STATISTICIAN:
        raise PermissionDenied(
            f"only the unblinded statistician may do this (you declared role {role!r})"
        )


def generate_lists(
    session: Session,
    *,
    protocol_id: str,
    actor: str,
    role: str,
    seed: int | None = None,
) -> list[ListSummary]:
    """Generate the allocation list of every stratum of a protocol now; return their summaries.

    Lists are otherwise generated at the first randomisation in a stratum. Refused once any list
    of the protocol exists (a list is never regenerated). Without ``seed`` a 128-bit seed is drawn
    from the operating system.
    """
    _require_statistician(role)
    protocol = _randomised_protocol(session, protocol_id)
    audit.lock_chain(session)
    if _master_seed(session, protocol_id) is not None:
        raise Conflict(
            f"allocation lists of {protocol_id} already exist; they are never regenerated"
        )
    master = lists.fresh_master_seed() if seed is None else seed
    if master < 0 or master >= 10**38:
        raise ValidationError("bad seed", problems=[Problem("seed", "must be 0 to 10^38 - 1")])
    arms = open_arms(session, protocol)
    if protocol.randomisation.method == "minimisation":
        keys = [MINIMISATION_LIST]
    else:
        keys = [_list_key(protocol, stratum_label(s), arms) for s in all_strata(protocol)]
    for key in keys:
        _create_list(session, protocol, key, seed=master, actor=actor)
    return list_summaries(session, protocol_id=protocol_id)


def list_summaries(session: Session, *, protocol_id: str) -> list[ListSummary]:
    """Return the protocol's allocation lists with slot counts but no arms (anyone may see)."""
    rows = session.execute(
        select(
            RandomisationList,
            func.count(RandomisationSlot.id),
            func.count(RandomisationSlot.subject_id),
        )
        .outerjoin(RandomisationSlot, RandomisationSlot.list_id == RandomisationList.id)
        .where(RandomisationList.protocol_id == protocol_id)
        .group_by(RandomisationList.id)
        .order_by(RandomisationList.id)
    ).all()
    return [
        ListSummary(
            list_id=lst.id,
            protocol_id=lst.protocol_id,
            stratum=lst.stratum,
            method=lst.method,
            created_by=lst.created_by,
            created_at=lst.created_at,
            slots=int(total),
            used=int(used),
        )
        for lst, total, used in rows
    ]


def export_list(
    session: Session,
    *,
    protocol_id: str,
    actor: str,
    role: str,
    unblinded: bool,
    stratum: str | None = None,
    reason: str | None = None,
) -> list[SlotRow]:
    """Return every slot (with its arm) of the protocol's lists, for the unblinded statistician.

    Refused with :class:`PermissionDenied` unless ``role`` is ``statistician`` and ``unblinded``
    is declared. Each export is audited (a refusal writes nothing: it is rolled back with the
    caller's transaction).
    """
    if role != STATISTICIAN or not unblinded:
        raise PermissionDenied(
            "the allocation list is concealed: only a statistician declaring unblinded access "
            f"may list or export it (role {role!r}, unblinded={unblinded})"
        )
    stmt = (
        select(RandomisationSlot, RandomisationList, Subject.study_id)
        .join(RandomisationList, RandomisationSlot.list_id == RandomisationList.id)
        .outerjoin(Subject, RandomisationSlot.subject_id == Subject.id)
        .where(RandomisationList.protocol_id == protocol_id)
        .order_by(RandomisationList.id, RandomisationSlot.position)
    )
    if stratum is not None:
        stmt = stmt.where(RandomisationList.stratum == stratum)
    rows = [
        SlotRow(
            list_id=lst.id,
            stratum=lst.stratum,
            method=lst.method,
            position=slot.position,
            block=slot.block,
            arm=slot.arm,
            study_id=study_id,
            assigned_by=slot.assigned_by,
            assigned_at=slot.assigned_at,
        )
        for slot, lst, study_id in session.execute(stmt).all()
    ]
    if not rows and not list_summaries(session, protocol_id=protocol_id):
        raise NotFound(f"{protocol_id} has no allocation list yet")
    audit.record(
        session,
        actor=actor,
        action="export",
        entity_type="randomisation_list",
        entity_id=protocol_id,
        after={"role": role, "stratum": stratum, "slots": len(rows)},
        reason=reason,
    )
    return rows


# --- assignment ------------------------------------------------------------------------------


def _claim_slot(
    session: Session, protocol: Protocol, lst: RandomisationList, subject: Subject, actor: str
) -> RandomisationSlot:
    """Take the lowest free slot of ``lst`` for ``subject`` (conditional UPDATE, retried)."""
    for _attempt in range(_CLAIM_ATTEMPTS):
        slot_id = session.scalar(
            select(RandomisationSlot.id)
            .where(RandomisationSlot.list_id == lst.id, RandomisationSlot.subject_id.is_(None))
            .order_by(RandomisationSlot.position)
            .limit(1)
        )
        if slot_id is None:
            _append_blocks(session, protocol, lst, min_new=max(1, protocol.target_enrolment // 2))
            continue
        taken = session.execute(
            update(RandomisationSlot)
            .where(RandomisationSlot.id == slot_id, RandomisationSlot.subject_id.is_(None))
            .values(subject_id=subject.id, assigned_by=actor, assigned_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) == 1:
            slot = session.get(RandomisationSlot, slot_id, populate_existing=True)
            assert slot is not None
            return slot
    raise Conflict("could not claim an allocation slot (too many at once); try again")


def _minimise_slot(
    session: Session,
    protocol: Protocol,
    lst: RandomisationList,
    subject: Subject,
    levels: Mapping[str, str],
    arms: Sequence[str],
    actor: str,
) -> tuple[RandomisationSlot, dict[str, Any]]:
    previous = [
        (parse_stratum_label(stratum), arm)
        for arm, stratum in session.execute(
            select(RandomisationSlot.arm, Subject.stratum)
            .join(Subject, RandomisationSlot.subject_id == Subject.id)
            .where(RandomisationSlot.list_id == lst.id)
            .order_by(RandomisationSlot.position)
        ).all()
    ]
    last = session.scalar(
        select(func.coalesce(func.max(RandomisationSlot.position), 0)).where(
            RandomisationSlot.list_id == lst.id
        )
    )
    position = int(last or 0) + 1
    measure = _imbalance_measure(protocol)
    rng = np.random.default_rng(lists.derive_seed(int(lst.seed), lst.stratum, position))
    choice = minimise(
        arms=arms,
        previous=previous,
        new=levels,
        probability=protocol.randomisation.minimisation_probability,
        rng=rng,
        ratios={a: protocol.arm(a).ratio for a in arms},
        measure=measure,
    )
    slot = RandomisationSlot(
        list_id=lst.id,
        position=position,
        block=0,
        arm=choice.arm,
        subject_id=subject.id,
        assigned_by=actor,
        assigned_at=utcnow(),
    )
    session.add(slot)
    session.flush()
    detail = {
        "imbalance": measure,
        "scores": choice.scores,
        "minimising": list(choice.minimising),
        "followed_minimisation": choice.followed,
    }
    return slot, detail


def _imbalance_measure(protocol: Protocol) -> Imbalance:
    value = protocol.settings.get("minimisation_imbalance", "range")
    for measure in IMBALANCE_MEASURES:
        if value == measure:
            return measure
    raise ValidationError(
        "bad protocol setting",
        problems=[
            Problem("settings.minimisation_imbalance", f"must be one of {IMBALANCE_MEASURES}")
        ],
    )


def randomise(
    session: Session,
    *,
    subject: Subject,
    actor: str,
    active_arms: Sequence[str] | None = None,
    seed: int | None = None,
) -> Assignment:
    """Randomise an enrolled subject and return the arm: the only moment the arm is revealed.

    The stratum comes from the subject's saved forms (the protocol's strata). ``active_arms``
    limits an adaptive trial to the arms still open (default: the protocol's arms less those
    closed with :func:`close_arm`). ``seed`` is the master seed used only if the protocol has no
    allocation list yet (default: fresh entropy from the operating system).
    """
    audit.lock_chain(session)
    protocol = records.subject_protocol(subject)
    if not protocol.is_randomised or protocol.randomisation.method == "none":
        raise Conflict(f"{protocol.id} is not a randomised protocol")
    session.flush()
    session.refresh(subject)  # another coordinator may have randomised it before we held the lock
    used = session.scalar(
        select(RandomisationSlot.list_id).where(RandomisationSlot.subject_id == subject.id)
    )
    if used is not None or subject.arm is not None:
        raise Conflict(f"subject {subject.study_id} is already randomised")
    if subject.status != "enrolled":
        raise Conflict(f"subject {subject.study_id} is {subject.status}; enrol before randomising")
    levels = subject_levels(session, subject, protocol)
    label = stratum_label(levels)
    arms = open_arms(session, protocol, active_arms)
    key = _list_key(protocol, label, arms)
    if len(key) > _KEY_LENGTH:
        raise ValidationError(
            "stratum too long to store",
            problems=[Problem("strata", f"list key {key!r} exceeds {_KEY_LENGTH} characters")],
        )
    lst = _get_list(session, protocol.id, key, lock=True)
    if lst is None:
        master = _master_seed(session, protocol.id)
        if master is None:
            master = lists.fresh_master_seed() if seed is None else seed
        lst = _create_list(session, protocol, key, seed=master, actor=actor)
    detail: dict[str, Any] = {}
    if lst.method == "minimisation":
        slot, detail = _minimise_slot(session, protocol, lst, subject, levels, arms, actor)
    else:
        slot = _claim_slot(session, protocol, lst, subject, actor)
    records.assign_arm(session, subject=subject, arm=slot.arm, stratum=label, actor=actor)
    audit.record(
        session,
        actor=actor,
        action="assign",
        entity_type="randomisation_slot",
        entity_id=slot.id,
        after={
            "list_id": lst.id,
            "list": lst.stratum,
            "position": slot.position,
            "block": slot.block,
            "method": lst.method,
            "stratum": label,
            "arm": slot.arm,
            "open_arms": arms,
            **detail,
        },
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    assert slot.assigned_at is not None
    return Assignment(
        study_id=subject.study_id,
        arm=slot.arm,
        stratum=label,
        method=lst.method,
        list_id=lst.id,
        position=slot.position,
        block=slot.block,
        assigned_by=actor,
        assigned_at=slot.assigned_at,
    )


def unblind(session: Session, *, subject: Subject, actor: str, reason: str) -> str:
    """Return the subject's arm for an emergency, after auditing who asked and why."""
    if not reason.strip():
        raise ValidationError(
            "emergency unblinding needs a reason", problems=[Problem("reason", "is required")]
        )
    audit.lock_chain(session)
    session.flush()
    session.refresh(subject)
    if subject.arm is None:
        raise Conflict(f"subject {subject.study_id} is not randomised")
    audit.record(
        session,
        actor=actor,
        action="unblind",
        entity_type="subject",
        entity_id=subject.id,
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    return subject.arm
