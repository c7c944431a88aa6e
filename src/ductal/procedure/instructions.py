"""Patient instruction sheets for ductoscopy and ductal lavage, in English and Chinese.

The sheet covers preparation (medicines to pause only after asking the prescriber, fasting when
sedated, a warm compress beforehand), what happens, aftercare, the warning signs that should
make the patient call, and when results come. It is personalised with the session date and the
site's contact number. The patient's name is printed only for an authorised user (admin or
investigator at the subject's site); otherwise the name line is left blank to fill by hand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from ductal import accounts, records
from ductal.errors import NotFound, PermissionDenied, Problem, ProtocolError, ValidationError
from ductal.models import Site, Subject
from ductal.procedure._render import css_text, html_to_pdf, render
from ductal.procedure.rules import max_minutes, procedure_settings
from ductal.protocols.model import Protocol
from ductal.vault import Vault

Lang = Literal["en", "zh"]
LANGUAGES: tuple[str, ...] = ("en", "zh")
NAME_ROLES = frozenset({"admin", "investigator"})
DEFAULT_MAX_MINUTES = 12
DEFAULT_RESULTS_DAYS = 7

_LABELS = {
    "en": {
        "title": "Ductoscopy and duct lavage: information for patients",
        "name": "Name",
        "date": "Appointment date",
        "phone": "Clinic phone",
        "footer": "Patient information sheet",
    },
    "zh": {
        "title": "乳管镜检查及乳管冲洗：患者须知",
        "name": "姓名",
        "date": "就诊日期",
        "phone": "诊室电话",
        "footer": "患者须知",
    },
}


@dataclass(frozen=True)
class SheetDetails:
    """What personalises a sheet; ``patient_name`` None leaves the name line blank."""

    lang: str
    site_name: str
    contact_phone: str | None = None
    session_date: dt.date | None = None
    patient_name: str | None = None
    max_minutes: int = DEFAULT_MAX_MINUTES
    results_days: int = DEFAULT_RESULTS_DAYS
    printed_on: dt.date | None = None


def _lang(lang: str) -> str:
    code = "zh" if lang.lower().startswith("zh") else lang.lower()
    if code not in LANGUAGES:
        raise ValidationError(
            "unknown language",
            problems=[Problem("lang", f"must be one of: {', '.join(LANGUAGES)}")],
        )
    return code


def _date_text(day: dt.date, lang: str) -> str:
    if lang == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {day.strftime('%B')} {day.year}"


def render_instructions_html(details: SheetDetails) -> str:
    """Return the instruction sheet as a printable HTML page."""
    lang = _lang(details.lang)
    labels = _LABELS[lang]
    printed = details.printed_on or dt.date.today()
    results_by = (
        _date_text(details.session_date + dt.timedelta(days=details.results_days), lang)
        if details.session_date
        else None
    )
    return render(
        f"instructions_{lang}.html.j2",
        html_lang="zh-Hans" if lang == "zh" else "en",
        base_size="11.5pt" if lang == "zh" else "11pt",
        line_height="1.6" if lang == "zh" else "1.45",
        title=labels["title"],
        footer=css_text(f"{details.site_name} · {labels['footer']}"),
        labels=labels,
        site_name=details.site_name,
        contact_phone=details.contact_phone,
        session_date=_date_text(details.session_date, lang) if details.session_date else None,
        patient_name=details.patient_name,
        max_minutes=details.max_minutes,
        results_days=details.results_days,
        results_by=results_by,
        printed_on=_date_text(printed, lang),
    )


def render_instructions_pdf(details: SheetDetails) -> bytes:
    """Return the instruction sheet as PDF bytes."""
    return html_to_pdf(render_instructions_html(details))


def _protocol_numbers(protocol: Protocol | None) -> tuple[int, int]:
    if protocol is None:
        return DEFAULT_MAX_MINUTES, DEFAULT_RESULTS_DAYS
    limit = max_minutes(protocol)
    try:
        days = procedure_settings(protocol).pathology.due_days
    except ProtocolError:  # a protocol without procedure rules uses the defaults
        days = DEFAULT_RESULTS_DAYS
    return (int(limit) if limit else DEFAULT_MAX_MINUTES), days


def site_sheet(
    session: Session,
    *,
    site_code: str,
    lang: str,
    session_date: dt.date | None = None,
    protocol: Protocol | None = None,
) -> SheetDetails:
    """Return the details of a blank-name sheet for a site (its name and contact number)."""
    site = accounts.get_site(session, site_code)
    minutes, days = _protocol_numbers(protocol)
    return SheetDetails(
        lang=_lang(lang),
        site_name=site.name,
        contact_phone=site.contact_phone,
        session_date=session_date,
        max_minutes=minutes,
        results_days=days,
    )


def may_see_name(session: Session, *, viewer: str | None, subject: Subject) -> bool:
    """Return True when ``viewer`` is an admin or investigator at the subject's site."""
    if not viewer:
        return False
    try:
        user = accounts.get_user(session, viewer)
    except NotFound:
        return False
    return bool(accounts.roles_at(session, user).get(subject.site_id, set()) & NAME_ROLES)


def subject_sheet(
    session: Session,
    *,
    subject: Subject,
    lang: str,
    session_date: dt.date | None = None,
    viewer: str | None = None,
    include_name: bool = False,
    vault: Vault | None = None,
) -> SheetDetails:
    """Return a subject's sheet details; with ``include_name`` the name comes from the vault.

    Only an admin or investigator at the subject's site may print the name
    (PermissionDenied otherwise); without ``include_name`` the name line stays blank.
    """
    site = session.get(Site, subject.site_id)
    assert site is not None
    name: str | None = None
    if include_name:
        if not may_see_name(session, viewer=viewer, subject=subject):
            raise PermissionDenied(
                "only an admin or investigator at the subject's site may print the patient's name"
            )
        if vault is None:
            raise ValidationError(
                "the identity vault is needed", problems=[Problem("vault", "is required")]
            )
        name = records.get_identity(session, subject=subject, vault=vault).get("name") or None
    minutes, days = _protocol_numbers(records.subject_protocol(subject))
    return SheetDetails(
        lang=_lang(lang),
        site_name=site.name,
        contact_phone=site.contact_phone,
        session_date=session_date,
        patient_name=name,
        max_minutes=minutes,
        results_days=days,
    )
