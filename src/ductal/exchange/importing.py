"""Write imported subjects through the records service, all or nothing (or partially).

Shared by the REDCap and ODM importers: each subject is screened, enrolled (and assigned its
arm), its forms saved and its final status set with :mod:`ductal.records`, so imported data is
validated and audited like data entered by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ductal import accounts, records
from ductal.errors import DuctalError
from ductal.exchange.report import ImportReport
from ductal.exchange.study_data import SubjectData
from ductal.forms import save_form
from ductal.protocols.model import Protocol

__all__ = ["Located", "write_subjects"]


@dataclass
class Located:
    """A subject read from a file with the line (or row) each of its forms came from."""

    subject: SubjectData
    line: int
    form_lines: dict[int, int]  # id(FormData) -> line


def _write_subject(
    session: Session,
    protocol: Protocol,
    located: Located,
    *,
    actor: str,
    report: ImportReport,
    today: dt.date | None,
    source_name: str,
    default_site: str | None = None,
) -> bool:
    """Write one subject through the records service; False (and problems) when refused."""
    subject_data = located.subject
    where = f"row {located.line}"
    order = {e.key: i for i, e in enumerate(protocol.schedule)}
    forms = sorted(subject_data.forms, key=lambda f: (order[f.event], f.event_instance, f.instance))
    screening = [f for f in forms if f.form == protocol.screening_form]
    if not screening:
        report.error(where, subject_data.study_id, f"has no {protocol.screening_form} form")
        return False
    try:
        site = accounts.get_site(session, subject_data.site or default_site or "?")
    except DuctalError:
        if default_site is None:
            report.error(where, subject_data.study_id, f"unknown site {subject_data.site!r}")
            return False
        try:
            site = accounts.get_site(session, default_site)
        except DuctalError:
            report.error(where, subject_data.study_id, f"unknown site {default_site!r}")
            return False
    step = screening[0]
    try:
        subject = records.screen(
            session,
            protocol_id=protocol.id,
            site=site,
            screening=step.data,
            actor=actor,
            study_id=subject_data.study_id,
            today=today,
        )
        wanted = subject_data.status
        enrolled_text = subject_data.enrolled_on
        screening_keys = {f.key for f in protocol.form(protocol.screening_form).fields}
        if (
            len(forms) > 1
            and subject.status == "eligible"
            and "consent_signed" not in screening_keys
        ):
            # a foreign study has no consent question: the source system enrolled the subject
            records.change_status(
                session,
                subject=subject,
                status="consented",
                actor=actor,
                reason=f"consent recorded in the source system ({source_name} import)",
            )
            report.warning(
                where,
                subject_data.study_id,
                "no consent question in the protocol: consent taken as recorded",
            )
        if enrolled_text is None and len(forms) > 1 and subject.status == "consented":
            enrolled_text = (subject.screened_on or dt.date.today()).isoformat()
            report.warning(where, subject_data.study_id, "no enrolment date: screening date used")
        if enrolled_text is not None:
            enrolled_on = dt.date.fromisoformat(enrolled_text)
            randomised = protocol.is_randomised and subject_data.arm is not None
            records.enrol(
                session,
                subject=subject,
                actor=actor,
                enrolled_on=enrolled_on,
                arm=None if randomised else subject_data.arm,
            )
            if randomised:
                # as randomisation records it: the arm and the stratum it was drawn in
                assert subject_data.arm is not None
                records.assign_arm(
                    session,
                    subject=subject,
                    arm=subject_data.arm,
                    stratum=subject_data.stratum,
                    actor=actor,
                )
        for fd in forms:
            step = fd
            if fd is screening[0]:
                continue
            saved = save_form(
                session,
                subject=subject,
                form_key=fd.form,
                data=fd.data,
                actor=actor,
                event_key=fd.event,
                event_instance=fd.event_instance,
                instance=fd.instance,
                allow_incomplete=True,
                today=today,
            )
            if saved.status == "incomplete" and fd.status != "incomplete":
                report.warning(
                    f"row {located.form_lines.get(id(fd), located.line)}",
                    f"{subject_data.study_id} {fd.form}",
                    "required answers are missing; stored as incomplete",
                )
        if wanted in ("completed", "withdrawn", "lost_to_follow_up") and subject.status != wanted:
            records.change_status(
                session,
                subject=subject,
                status=wanted,
                actor=actor,
                reason=subject_data.status_reason or f"imported from {source_name}",
            )
        elif wanted and subject.status != wanted:
            report.warning(
                where,
                subject_data.study_id,
                f"status is {subject.status} after import, the file says {wanted}",
            )
    except DuctalError as exc:
        line = located.form_lines.get(id(step), located.line)
        details = "; ".join(str(p) for p in exc.problems)
        report.error(
            f"row {line}",
            f"{subject_data.study_id} {step.form}",
            exc.message + (f" ({details})" if details else ""),
        )
        return False
    return True


def write_subjects(
    session: Session,
    *,
    protocol: Protocol,
    located: Iterable[Located],
    report: ImportReport,
    actor: str,
    partial: bool,
    bad_ids: set[str],
    today: dt.date | None,
    progress: Callable[[int], None] | None,
    source_name: str,
    default_site: str | None = None,
) -> ImportReport:
    """Write every subject not in ``bad_ids``; raise (nothing kept) on any error unless partial.

    Without ``partial`` the caller's transaction holds everything and a ValidationError listing
    every problem undoes it. With ``partial`` each subject has its own savepoint. Subjects whose
    site is not in the database go to ``default_site`` when it is given.
    """
    if report.errors and not partial:
        report.raise_if_errors("use --partial to import the valid part")
    written = 0
    forms = 0
    for item in located:
        if item.subject.study_id in bad_ids:
            report.skipped.append(item.subject.study_id)
            continue
        nested = session.begin_nested() if partial else None
        ok = _write_subject(
            session,
            protocol,
            item,
            actor=actor,
            report=report,
            today=today,
            source_name=source_name,
            default_site=default_site,
        )
        if ok:
            written += 1
            forms += len(item.subject.forms)
            if nested is not None:
                nested.commit()
        elif nested is not None:
            nested.rollback()
            report.skipped.append(item.subject.study_id)
        if progress is not None:
            progress(1)
    if report.errors and not partial:
        report.raise_if_errors("use --partial to import the valid part")
    report.imported = {"subjects": written, "forms": forms}
    return report
