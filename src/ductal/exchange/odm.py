"""CDISC ODM 1.3.2: export a protocol's metadata and clinical data, validate, import.

The writer streams: the XML is written as text, one subject at a time, so a study of any size
is exported in flat memory. Every export can be checked with :func:`validate_odm`, which runs the
official ODM 1.3.2 XML schema (shipped inside the ``odmlib`` package) while parsing incrementally,
then checks what the schema cannot: each ItemData value against its ItemDef's DataType and
CodeList, and every OID reference (StudyEventOID, FormOID, ItemGroupOID, ItemOID, CodeListOID,
ConditionOID, UserOID, LocationOID, SignatureOID) against a definition.

OIDs: ``SE.<event>``, ``F.<form>``, ``IG.<form>``, ``I.<form>.<field>`` (a multiple-choice field
is one boolean item per option, ``I.<form>.<field>.<code>``), ``CL.<form>.<field>``, ``C.<form>.
<field>`` (the ConditionDef under which the field is *not* collected: ``not (show_if)``, in the
rule language, ``FormalExpression Context="ductal"``). A repeating ductal event is a repeating
StudyEventDef (``StudyEventRepeatKey`` = occurrence); a repeating form is a repeating FormDef
(``FormRepeatKey``). The subject's site, arm, status and dates are the ``F.ductal_subject`` form of
the screening event, as in the REDCap export. What ODM has no element for (Chinese labels,
rules, the study design) travels in ``Alias Context="ductal"`` elements as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import __version__
from ductal.exchange.importing import Located, write_subjects
from ductal.exchange.report import ImportReport
from ductal.exchange.study_data import FormData, SubjectData
from ductal.models import SUBJECT_STATUSES, AuditEntry, Signature
from ductal.protocols.model import FieldDef, FormDef, Protocol
from ductal.protocols.validation import validate_form_data

__all__ = [
    "NS",
    "AuditTrail",
    "audit_trail",
    "import_odm",
    "odm_schema",
    "odm_to_protocol",
    "read_odm",
    "validate_odm",
    "write_odm",
]

NS = "http://www.cdisc.org/ns/odm/v1.3"
_Q = "{" + NS + "}"
SUBJECT_FORM = "ductal_subject"
_SUBJECT_ITEMS = ("site", "arm", "stratum", "status", "status_reason", "screened_on", "enrolled_on")
_SUBJECT_TYPES = {"screened_on": "date", "enrolled_on": "date"}

_DATA_TYPE = {
    "text": "text",
    "integer": "integer",
    "number": "float",
    "date": "date",
    "datetime": "datetime",
    "choice": "text",
    "yes_no": "integer",
    "calc": "float",
    "file": "text",
}


def odm_schema() -> etree.XMLSchema:
    """Return the CDISC ODM 1.3.2 XML schema shipped in the odmlib package."""
    root = resources.files("odmlib").joinpath("schemas/odm/1.3.2/ODM1-3-2.xsd")
    with resources.as_file(root) as path:
        return etree.XMLSchema(etree.parse(str(path)))


# --------------------------------------------------------------------------------------------
# Text helpers (the writer produces text directly: much faster than building trees)

_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _a(value: object) -> str:
    return _INVALID_XML.sub("", str(value)).translate(_ATTR_ESCAPES)


def _t(value: object) -> str:
    return _INVALID_XML.sub("", str(value)).translate(_TEXT_ESCAPES)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _translated(text: Any, tag: str) -> str:
    parts = [f'<TranslatedText xml:lang="en">{_t(text.en)}</TranslatedText>']
    if text.zh:
        parts.append(f'<TranslatedText xml:lang="zh">{_t(text.zh)}</TranslatedText>')
    return f"<{tag}>{''.join(parts)}</{tag}>"


def _oid_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _unit_oid(unit: str) -> str:
    return "MU." + _oid_part(unit.encode("ascii", "backslashreplace").decode().replace("\\", "_"))


# --------------------------------------------------------------------------------------------
# Metadata


def _item_defs(form: FormDef, f: FieldDef) -> list[str]:
    base = f"I.{form.key}.{f.key}"
    question = _translated(f.label, "Question")
    spec = _json(f.model_dump(mode="json", exclude_defaults=True))
    alias = f'<Alias Context="ductal" Name="{_a(spec)}"/>'
    if f.type == "multi_choice":
        out = []
        for choice in f.choices:
            label = f.label.en + ": " + choice.label.en
            out.append(
                f'<ItemDef OID="{base}.{_oid_part(choice.code)}" '
                f'Name="{_a(f.key)}({_a(choice.code)})"'
                f' DataType="integer" Length="1">'
                f'<Question><TranslatedText xml:lang="en">{_t(label)}</TranslatedText></Question>'
                f'<CodeListRef CodeListOID="CL.yes_no"/>'
                + (alias if choice is f.choices[0] else "")
                + "</ItemDef>"
            )
        return out
    attrs = f'OID="{base}" Name="{_a(f.key)}" DataType="{_DATA_TYPE[f.type]}"'
    if f.type == "text" and f.max_length:
        attrs += f' Length="{f.max_length}"'
    if f.type in ("number", "calc") and f.decimals is not None:
        attrs += f' SignificantDigits="{f.decimals}"'
    body = [question]
    if f.unit:
        body.append(f'<MeasurementUnitRef MeasurementUnitOID="{_unit_oid(f.unit)}"/>')
    for bound, comparator in ((f.min, "GE"), (f.max, "LE")):
        if bound is not None and f.type in ("integer", "number", "calc"):
            value = int(bound) if f.type == "integer" else bound
            body.append(
                f'<RangeCheck Comparator="{comparator}" SoftHard="Hard">'
                f"<CheckValue>{value}</CheckValue></RangeCheck>"
            )
    if f.type == "choice":
        body.append(f'<CodeListRef CodeListOID="CL.{form.key}.{f.key}"/>')
    elif f.type == "yes_no":
        body.append('<CodeListRef CodeListOID="CL.yes_no"/>')
    body.append(alias)
    return [f"<ItemDef {attrs}>{''.join(body)}</ItemDef>"]


def _subject_metadata() -> tuple[str, str, list[str], list[str]]:
    refs = "".join(
        f'<ItemRef ItemOID="I.{SUBJECT_FORM}.{k}" '
        f'Mandatory="{"Yes" if k in ("site", "status") else "No"}"/>'
        for k in _SUBJECT_ITEMS
    )
    form = (
        f'<FormDef OID="F.{SUBJECT_FORM}" Name="Subject" Repeating="No">'
        f'<ItemGroupRef ItemGroupOID="IG.{SUBJECT_FORM}" Mandatory="Yes"/></FormDef>'
    )
    group = (
        f'<ItemGroupDef OID="IG.{SUBJECT_FORM}" Name="Subject" Repeating="No">{refs}</ItemGroupDef>'
    )
    items = []
    for key in _SUBJECT_ITEMS:
        kind = _SUBJECT_TYPES.get(key, "text")
        extra = f'<CodeListRef CodeListOID="CL.{SUBJECT_FORM}.status"/>' if key == "status" else ""
        items.append(
            f'<ItemDef OID="I.{SUBJECT_FORM}.{key}" Name="{key}" DataType="{kind}">'
            f'<Question><TranslatedText xml:lang="en">{key.replace("_", " ")}</TranslatedText>'
            f"</Question>{extra}</ItemDef>"
        )
    codes = "".join(
        f'<CodeListItem CodedValue="{s}"><Decode><TranslatedText xml:lang="en">'
        f"{s.replace('_', ' ')}</TranslatedText></Decode></CodeListItem>"
        for s in SUBJECT_STATUSES
    )
    codelists = [
        f'<CodeList OID="CL.{SUBJECT_FORM}.status" Name="status" DataType="text">{codes}</CodeList>'
    ]
    return form, group, items, codelists


def metadata_xml(protocol: Protocol) -> str:
    """Return the ``<MetaDataVersion>`` element of ``protocol`` as text."""
    screening = next((e for e in protocol.schedule if e.kind == "screening"), protocol.schedule[0])
    study_level = protocol.model_dump(mode="json", exclude={"forms", "schedule"})
    parts = [
        f'<MetaDataVersion OID="MDV.{_a(protocol.version)}" '
        f'Name="{_a(protocol.id)} {_a(protocol.version)}"'
        f' Description="{_a(protocol.title.en)}">',
        "<Protocol>",
        *(
            f'<StudyEventRef StudyEventOID="SE.{e.key}" OrderNumber="{i}" '
            f'Mandatory="{"Yes" if e.kind in ("screening", "baseline") else "No"}"/>'
            for i, e in enumerate(protocol.schedule, start=1)
        ),
        f'<Alias Context="ductal" Name="{_a(_json(study_level))}"/>',
        "</Protocol>",
    ]
    for event in protocol.schedule:
        kind = {"unscheduled": "Unscheduled", "screening": "Scheduled"}.get(event.kind, "Scheduled")
        repeating = "Yes" if event.repeat is not None or event.kind == "unscheduled" else "No"
        forms = list(event.forms)
        if event is screening:
            forms = [SUBJECT_FORM, *forms]
        form_refs = "".join(
            f'<FormRef FormOID="F.{k}" OrderNumber="{i}" Mandatory="No"/>'
            for i, k in enumerate(forms, start=1)
        )
        spec = _a(_json(event.model_dump(mode="json", exclude_defaults=True)))
        parts.append(
            f'<StudyEventDef OID="SE.{event.key}" Name="{_a(event.label.en)}" '
            f'Repeating="{repeating}" Type="{kind}">{form_refs}'
            f'<Alias Context="ductal" Name="{spec}"/></StudyEventDef>'
        )
    subject_form, subject_group, subject_items, subject_codelists = _subject_metadata()
    parts.append(subject_form)
    for form in protocol.forms:
        meta = _a(_json(form.model_dump(mode="json", exclude={"fields"}, exclude_defaults=True)))
        parts.append(
            f'<FormDef OID="F.{form.key}" Name="{_a(form.title.en)}" '
            f'Repeating="{"Yes" if form.repeating else "No"}">'
            f'<ItemGroupRef ItemGroupOID="IG.{form.key}" Mandatory="Yes"/>'
            f'<Alias Context="ductal" Name="{meta}"/></FormDef>'
        )
    parts.append(subject_group)
    for form in protocol.forms:
        refs: list[str] = []
        for f in form.fields:
            oids = (
                [f"I.{form.key}.{f.key}.{_oid_part(c.code)}" for c in f.choices]
                if f.type == "multi_choice"
                else [f"I.{form.key}.{f.key}"]
            )
            for oid in oids:
                condition = (
                    f' CollectionExceptionConditionOID="C.{form.key}.{f.key}"' if f.show_if else ""
                )
                refs.append(
                    f'<ItemRef ItemOID="{oid}" '
                    f'Mandatory="{"Yes" if f.required else "No"}"{condition}/>'
                )
        parts.append(
            f'<ItemGroupDef OID="IG.{form.key}" Name="{_a(form.title.en)}" Repeating="No">'
            f"{''.join(refs)}</ItemGroupDef>"
        )
    parts.extend(subject_items)
    for form in protocol.forms:
        for f in form.fields:
            parts.extend(_item_defs(form, f))
    parts.append(
        '<CodeList OID="CL.yes_no" Name="yes_no" DataType="integer">'
        '<CodeListItem CodedValue="1"><Decode><TranslatedText xml:lang="en">Yes</TranslatedText>'
        '</Decode></CodeListItem><CodeListItem CodedValue="0"><Decode>'
        '<TranslatedText xml:lang="en">No</TranslatedText></Decode></CodeListItem></CodeList>'
    )
    parts.extend(subject_codelists)
    for form in protocol.forms:
        for f in form.fields:
            if f.type != "choice":
                continue
            items = "".join(
                f'<CodeListItem CodedValue="{_a(c.code)}">'
                f"{_translated(c.label, 'Decode')}</CodeListItem>"
                for c in f.choices
            )
            parts.append(
                f'<CodeList OID="CL.{form.key}.{f.key}" Name="{_a(f.key)}" DataType="text">'
                f"{items}</CodeList>"
            )
    for form in protocol.forms:
        for f in form.fields:
            if f.show_if:
                parts.append(
                    f'<ConditionDef OID="C.{form.key}.{f.key}" Name="{_a(f.key)} hidden">'
                    f'<Description><TranslatedText xml:lang="en">{_t(f.key)} is not collected '
                    "when its branching logic is false</TranslatedText></Description>"
                    f'<FormalExpression Context="ductal">not ({_t(f.show_if)})</FormalExpression>'
                    "</ConditionDef>"
                )
    parts.append("</MetaDataVersion>")
    return "".join(parts)


def _basic_definitions(protocol: Protocol) -> str:
    units = sorted({f.unit for form in protocol.forms for f in form.fields if f.unit})
    if not units:
        return ""
    body = "".join(
        f'<MeasurementUnit OID="{_unit_oid(u)}" Name="{_a(u)}"><Symbol>'
        f'<TranslatedText xml:lang="en">{_t(u)}</TranslatedText></Symbol></MeasurementUnit>'
        for u in units
    )
    return f"<BasicDefinitions>{body}</BasicDefinitions>"


# --------------------------------------------------------------------------------------------
# Audit trail (optional)


@dataclass
class AuditTrail:
    """The latest audit entry and live signatures of each form record, and who/where they were."""

    last_change: dict[int, AuditEntry] = field(default_factory=dict)
    signatures: dict[int, list[Signature]] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    meanings: set[str] = field(default_factory=set)


def audit_trail(session: Session, record_ids: Iterable[int]) -> AuditTrail:
    """Return the audit facts the ODM export attaches to the given form records."""
    trail = AuditTrail()
    ids = list(record_ids)
    for start in range(0, len(ids), 900):
        chunk = [str(i) for i in ids[start : start + 900]]
        for entry in session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == "form_record", AuditEntry.entity_id.in_(chunk))
            .order_by(AuditEntry.id)
        ):
            trail.last_change[int(entry.entity_id)] = entry
            trail.users.add(entry.actor)
        for signature in session.scalars(
            select(Signature).where(
                Signature.form_record_id.in_([int(c) for c in chunk]),
                Signature.voided_at.is_(None),
            )
        ):
            trail.signatures.setdefault(signature.form_record_id, []).append(signature)
            trail.users.add(signature.signer)
            trail.meanings.add(signature.meaning)
    return trail


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _user_oid(name: str) -> str:
    return "U." + _oid_part(name)


def _admin_data(protocol: Protocol, sites: Iterable[str], trail: AuditTrail | None) -> str:
    mdv = (
        f'<MetaDataVersionRef StudyOID="ST.{_a(protocol.id)}" '
        f'MetaDataVersionOID="MDV.{_a(protocol.version)}" '
        f'EffectiveDate="{dt.date.today().isoformat()}"/>'
    )
    users = "".join(
        f'<User OID="{_a(_user_oid(u))}"><LoginName>{_t(u)}</LoginName></User>'
        for u in sorted(trail.users if trail else set())
    )
    locations = "".join(
        f'<Location OID="LOC.{_a(_oid_part(s))}" Name="{_a(s)}" LocationType="Site">'
        f"{mdv}</Location>"
        for s in sorted(set(sites))
    )
    signature_defs = "".join(
        f'<SignatureDef OID="SIG.{_a(_oid_part(m))}" Methodology="Electronic"><Meaning>{_t(m)}'
        f"</Meaning><LegalReason>ductal electronic signature: {_t(m)}</LegalReason></SignatureDef>"
        for m in sorted(trail.meanings if trail else set())
    )
    return (
        f'<AdminData StudyOID="ST.{_a(protocol.id)}">{users}{locations}{signature_defs}</AdminData>'
    )


# --------------------------------------------------------------------------------------------
# Clinical data


class _ItemWriter:
    """Pre-computed per-form item lists: (key, OID, kind, decimals, choice OIDs)."""

    def __init__(self, protocol: Protocol) -> None:
        self.forms: dict[str, list[tuple[str, str, str, int | None, list[tuple[str, str]]]]] = {}
        for form in protocol.forms:
            items: list[tuple[str, str, str, int | None, list[tuple[str, str]]]] = []
            for f in form.fields:
                oid = f"I.{form.key}.{f.key}"
                choices = [(c.code, f"{oid}.{_oid_part(c.code)}") for c in f.choices]
                items.append((f.key, oid, f.type, f.decimals, choices))
            self.forms[form.key] = items
        self.repeating_events = {
            e.key for e in protocol.schedule if e.repeat is not None or e.kind == "unscheduled"
        }
        self.repeating_forms = {f.key for f in protocol.forms if f.repeating}
        self.screening = next(
            (e for e in protocol.schedule if e.kind == "screening"), protocol.schedule[0]
        ).key
        self.event_order = {e.key: i for i, e in enumerate(protocol.schedule)}

    def item_data(self, fd: FormData) -> str:
        out: list[str] = []
        data = fd.data
        for key, oid, kind, decimals, choices in self.forms[fd.form]:
            value = data.get(key)
            if kind == "multi_choice":
                if value is None:
                    continue
                ticked = set(value)
                out.extend(
                    f'<ItemData ItemOID="{coid}" Value="{1 if code in ticked else 0}"/>'
                    for code, coid in choices
                )
                continue
            if value is None:
                continue
            if kind == "number" and decimals is not None:
                text = f"{value:.{decimals}f}"
            elif isinstance(value, float):
                text = repr(value)
            else:
                text = _a(value)
            out.append(f'<ItemData ItemOID="{oid}" Value="{text}"/>')
        return "".join(out)


def _subject_xml(w: _ItemWriter, subject: SubjectData, trail: AuditTrail | None) -> str:
    site = _a(_oid_part(subject.site))
    parts = [
        f'<SubjectData SubjectKey="{_a(subject.study_id)}"><SiteRef LocationOID="LOC.{site}"/>'
    ]
    events: dict[tuple[str, int], list[FormData]] = {}
    for fd in subject.forms:
        events.setdefault((fd.event, fd.event_instance), []).append(fd)
    key = (w.screening, 1)
    events.setdefault(key, [])
    values = [getattr(subject, k) for k in _SUBJECT_ITEMS]
    subject_items = "".join(
        f'<ItemData ItemOID="I.{SUBJECT_FORM}.{k}" Value="{_a(v)}"/>'
        for k, v in zip(_SUBJECT_ITEMS, values, strict=True)
        if v not in (None, "")
    )
    for (event, occurrence), forms in sorted(
        events.items(), key=lambda kv: (w.event_order.get(kv[0][0], 0), kv[0][1])
    ):
        repeat = f' StudyEventRepeatKey="{occurrence}"' if event in w.repeating_events else ""
        parts.append(f'<StudyEventData StudyEventOID="SE.{event}"{repeat}>')
        if (event, occurrence) == key:
            parts.append(
                f'<FormData FormOID="F.{SUBJECT_FORM}">'
                f'<ItemGroupData ItemGroupOID="IG.{SUBJECT_FORM}">'
                f"{subject_items}</ItemGroupData></FormData>"
            )
        for fd in sorted(forms, key=lambda f: (f.form, f.instance)):
            form_repeat = f' FormRepeatKey="{fd.instance}"' if fd.form in w.repeating_forms else ""
            parts.append(f'<FormData FormOID="F.{fd.form}"{form_repeat}>')
            if trail is not None and fd.record_id is not None:
                parts.append(_audit_xml(trail, fd.record_id, subject.site))
            parts.append(
                f'<ItemGroupData ItemGroupOID="IG.{fd.form}">{w.item_data(fd)}</ItemGroupData>'
            )
            parts.append("</FormData>")
        parts.append("</StudyEventData>")
    parts.append("</SubjectData>")
    return "".join(parts)


def _audit_xml(trail: AuditTrail, record_id: int, site: str) -> str:
    out = []
    location = f'<LocationRef LocationOID="LOC.{_a(_oid_part(site))}"/>'
    entry = trail.last_change.get(record_id)
    if entry is not None:
        reason = f"<ReasonForChange>{_t(entry.reason)}</ReasonForChange>" if entry.reason else ""
        out.append(
            f'<AuditRecord EditPoint="DBAudit" UsedImputationMethod="No">'
            f'<UserRef UserOID="{_a(_user_oid(entry.actor))}"/>{location}'
            f"<DateTimeStamp>{_stamp(entry.occurred_at)}</DateTimeStamp>{reason}"
            f"<SourceID>audit:{entry.id}:{entry.hash}</SourceID></AuditRecord>"
        )
    signatures = trail.signatures.get(record_id, [])
    if signatures:
        latest = max(signatures, key=lambda s: s.signed_at)
        out.append(
            f'<Signature><UserRef UserOID="{_a(_user_oid(latest.signer))}"/>{location}'
            f'<SignatureRef SignatureOID="SIG.{_a(_oid_part(latest.meaning))}"/>'
            f"<DateTimeStamp>{_stamp(latest.signed_at)}</DateTimeStamp></Signature>"
        )
    return "".join(out)


def write_odm(
    protocol: Protocol,
    subjects: Iterable[SubjectData],
    stream: IO[str],
    *,
    trail: AuditTrail | None = None,
    sites: Iterable[str] = (),
    created: dt.datetime | None = None,
    file_oid: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write an ODM 1.3.2 snapshot (metadata, admin data, clinical data) to ``stream``.

    Subjects are written one at a time. ``trail`` (from :func:`audit_trail`) adds each form's
    latest AuditRecord and live Signature; ``sites`` lists the site codes for AdminData (the
    subjects' sites are added as they are seen is not possible when streaming, so pass them).
    Returns the number of subjects written.
    """
    moment = created or dt.datetime.now(dt.UTC)
    stamp = _stamp(moment)
    oid = file_oid or f"ductal.{protocol.id}.{moment.strftime('%Y%m%dT%H%M%S')}"
    description = protocol.description.en if protocol.description else protocol.title.en
    stream.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    stream.write(
        f'<ODM xmlns="{NS}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
        f'FileType="Snapshot" Granularity="All" FileOID="{_a(oid)}" CreationDateTime="{stamp}" '
        f'ODMVersion="1.3.2" Originator="ductal" SourceSystem="ductal" '
        f'SourceSystemVersion="{_a(__version__)}">\n'
    )
    stream.write(
        f'<Study OID="ST.{_a(protocol.id)}"><GlobalVariables>'
        f"<StudyName>{_t(protocol.title.en)}</StudyName>"
        f"<StudyDescription>{_t(description)}</StudyDescription>"
        f"<ProtocolName>{_t(protocol.registration or protocol.id)}</ProtocolName></GlobalVariables>"
    )
    stream.write(_basic_definitions(protocol))
    stream.write(metadata_xml(protocol))
    stream.write("</Study>\n")
    stream.write(_admin_data(protocol, sites, trail))
    stream.write(
        f'\n<ClinicalData StudyOID="ST.{_a(protocol.id)}" '
        f'MetaDataVersionOID="MDV.{_a(protocol.version)}">\n'
    )
    writer = _ItemWriter(protocol)
    count = 0
    for subject in subjects:
        stream.write(_subject_xml(writer, subject, trail))
        stream.write("\n")
        count += 1
        if progress is not None:
            progress(1)
    stream.write("</ClinicalData>\n</ODM>\n")
    return count


# --------------------------------------------------------------------------------------------
# Validation and reading


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _type_problem(kind: str, value: str) -> str | None:
    try:
        if kind == "integer":
            int(value)
        elif kind in ("float", "double"):
            float(value)
        elif kind == "date":
            if not _DATE_RE.match(value):
                raise ValueError
            dt.date.fromisoformat(value)
        elif kind == "datetime":
            if len(value) < 19 or value[10] != "T":
                raise ValueError
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif kind == "boolean" and value not in ("true", "false", "1", "0"):
            raise ValueError
    except ValueError:
        return f"{value!r} is not a valid {kind}"
    return None


@dataclass
class _Metadata:
    """What the validator and reader need from a file's MetaDataVersion and AdminData."""

    events: dict[str, dict[str, str]] = field(default_factory=dict)
    forms: dict[str, dict[str, str]] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    items: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    codelists: dict[str, set[str]] = field(default_factory=dict)
    conditions: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    locations: set[str] = field(default_factory=set)
    signatures: set[str] = field(default_factory=set)
    refs: list[tuple[int, str, str, str]] = field(default_factory=list)  # line, kind, oid, where
    aliases: dict[str, str] = field(default_factory=dict)  # OID -> ductal JSON
    study_alias: str | None = None
    event_forms: dict[str, list[str]] = field(default_factory=dict)
    form_groups: dict[str, list[str]] = field(default_factory=dict)
    group_items: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    item_names: dict[str, str] = field(default_factory=dict)
    item_questions: dict[str, str] = field(default_factory=dict)
    item_codelist: dict[str, str] = field(default_factory=dict)
    codelist_decodes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _local(tag: Any) -> str:
    return tag[len(_Q) :] if isinstance(tag, str) and tag.startswith(_Q) else str(tag)


def _collect_metadata(element: etree._Element, meta: _Metadata) -> None:
    name = _local(element.tag)
    oid = element.get("OID", "")
    line = element.sourceline or 0
    if name == "StudyEventDef":
        meta.events[oid] = dict(element.attrib)
        meta.event_forms[oid] = [r.get("FormOID", "") for r in element.iter(f"{_Q}FormRef")]
        for r in element.iter(f"{_Q}FormRef"):
            meta.refs.append((r.sourceline or line, "FormDef", r.get("FormOID", ""), "FormRef"))
    elif name == "StudyEventRef":
        meta.refs.append((line, "StudyEventDef", element.get("StudyEventOID", ""), name))
    elif name == "FormDef":
        meta.forms[oid] = dict(element.attrib)
        meta.form_groups[oid] = [
            r.get("ItemGroupOID", "") for r in element.iter(f"{_Q}ItemGroupRef")
        ]
        for r in element.iter(f"{_Q}ItemGroupRef"):
            meta.refs.append(
                (r.sourceline or line, "ItemGroupDef", r.get("ItemGroupOID", ""), "ItemGroupRef")
            )
    elif name == "ItemGroupDef":
        meta.groups.add(oid)
        meta.group_items[oid] = [
            (r.get("ItemOID", ""), r.get("Mandatory") == "Yes")
            for r in element.iter(f"{_Q}ItemRef")
        ]
        for r in element.iter(f"{_Q}ItemRef"):
            meta.refs.append((r.sourceline or line, "ItemDef", r.get("ItemOID", ""), "ItemRef"))
            cond = r.get("CollectionExceptionConditionOID")
            if cond:
                meta.refs.append((r.sourceline or line, "ConditionDef", cond, "ItemRef"))
    elif name == "ItemDef":
        ref = element.find(f"{_Q}CodeListRef")
        codelist = ref.get("CodeListOID") if ref is not None else None
        meta.items[oid] = (element.get("DataType", "text"), codelist)
        meta.item_names[oid] = element.get("Name", oid)
        question = element.find(f"{_Q}Question/{_Q}TranslatedText")
        if question is not None and question.text:
            meta.item_questions[oid] = question.text
        if codelist:
            meta.item_codelist[oid] = codelist
            meta.refs.append((ref.sourceline or line, "CodeList", codelist, "CodeListRef"))
    elif name == "CodeList":
        meta.codelists[oid] = {i.get("CodedValue", "") for i in element.iter(f"{_Q}CodeListItem")}
        decodes = []
        for i in element.iter(f"{_Q}CodeListItem"):
            text = i.find(f"{_Q}Decode/{_Q}TranslatedText")
            decodes.append((i.get("CodedValue", ""), text.text or "" if text is not None else ""))
        meta.codelist_decodes[oid] = decodes
    elif name == "ConditionDef":
        meta.conditions.add(oid)
    elif name == "User":
        meta.users.add(oid)
    elif name == "Location":
        meta.locations.add(oid)
    elif name == "SignatureDef":
        meta.signatures.add(oid)
    if name in ("StudyEventDef", "FormDef", "ItemDef"):
        alias = element.find(f"{_Q}Alias[@Context='ductal']")
        if alias is not None:
            meta.aliases[oid] = alias.get("Name", "")
    if name == "Protocol":
        alias = element.find(f"{_Q}Alias[@Context='ductal']")
        if alias is not None:
            meta.study_alias = alias.get("Name", "")


_DEFINITIONS = {
    "StudyEventDef": "events",
    "FormDef": "forms",
    "ItemGroupDef": "groups",
    "ItemDef": "items",
    "CodeList": "codelists",
    "ConditionDef": "conditions",
    "User": "users",
    "Location": "locations",
    "SignatureDef": "signatures",
}


@dataclass
class OdmContent:
    """What :func:`read_odm` found: metadata, subjects as ductal data, and the report."""

    meta: _Metadata
    subjects: list[Located]
    report: ImportReport


def _known(meta: _Metadata, kind: str, oid: str) -> bool:
    return oid in getattr(meta, _DEFINITIONS[kind])


def read_odm(
    source: str | Path | IO[bytes],
    *,
    protocol: Protocol | None = None,
    report: ImportReport | None = None,
    keep_data: bool = True,
    schema: bool = True,
) -> OdmContent:
    """Parse an ODM file, validating it against the ODM 1.3.2 schema as it streams.

    Every problem is reported with its line: schema violations, references to undefined OIDs,
    values that do not match their ItemDef's DataType or CodeList. With ``protocol`` the clinical
    data is also mapped onto ductal forms (``keep_data``) and checked as data entry would be.
    """
    report = report or ImportReport(source=str(source) if isinstance(source, str | Path) else "ODM")
    meta = _Metadata()
    located: dict[str, Located] = {}
    xsd = odm_schema() if schema else None
    context = etree.iterparse(
        source,
        events=("end",),
        schema=xsd,
        huge_tree=True,
        remove_blank_text=True,
        resolve_entities=False,
        no_network=True,
    )
    mapper = _DataMapper(protocol, meta, report) if protocol is not None and keep_data else None
    try:
        for _, element in context:
            name = _local(element.tag)
            if name in _DEFINITIONS or name in ("StudyEventRef", "Protocol"):
                _collect_metadata(element, meta)
            elif name == "ItemData":
                _check_value(element, meta, report)
            elif name in ("UserRef", "LocationRef", "SignatureRef", "SiteRef"):
                attr = {"UserRef": "UserOID", "SignatureRef": "SignatureOID"}.get(
                    name, "LocationOID"
                )
                kind = {"UserRef": "User", "SignatureRef": "SignatureDef"}.get(name, "Location")
                meta.refs.append((element.sourceline or 0, kind, element.get(attr, ""), name))
            elif name == "SubjectData":
                if mapper is not None:
                    item = mapper.subject(element)
                    if item is not None:
                        if item.subject.study_id in located:
                            report.error(
                                f"line {element.sourceline}",
                                item.subject.study_id,
                                "subject appears twice",
                            )
                        located[item.subject.study_id] = item
                element.clear(keep_tail=False)
                while element.getprevious() is not None:
                    del element.getparent()[0]
    except etree.XMLSyntaxError as exc:
        _schema_errors(source, exc, report)
    for line, kind, oid, where in meta.refs:
        if not _known(meta, kind, oid):
            report.error(f"line {line}", oid or "<blank>", f"{where} refers to an undefined {kind}")
    return OdmContent(meta=meta, subjects=list(located.values()), report=report)


def _schema_errors(
    source: str | Path | IO[bytes], exc: etree.XMLSyntaxError, report: ImportReport
) -> None:
    """Report every schema violation (streaming validation stops at the first one)."""
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        document = etree.parse(
            source, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        )
    except etree.XMLSyntaxError as syntax:
        report.error(f"line {syntax.lineno or 0}", "", f"not well-formed XML: {syntax.msg}")
        return
    schema = odm_schema()
    if schema.validate(document):  # pragma: no cover - the stream said otherwise
        report.error(f"line {exc.lineno or 0}", "", f"not valid ODM 1.3.2: {exc.msg}")
        return
    for error in schema.error_log:
        report.error(f"line {error.line}", "", f"not valid ODM 1.3.2: {error.message}")


def _check_value(element: etree._Element, meta: _Metadata, report: ImportReport) -> None:
    oid = element.get("ItemOID", "")
    value = element.get("Value")
    line = f"line {element.sourceline}"
    definition = meta.items.get(oid)
    if definition is None:
        meta.refs.append((element.sourceline or 0, "ItemDef", oid, "ItemData"))
        return
    if value is None:
        return
    kind, codelist = definition
    problem = _type_problem(kind, value)
    if problem:
        report.error(line, oid, problem)
    elif codelist and codelist in meta.codelists and value not in meta.codelists[codelist]:
        report.error(line, oid, f"{value!r} is not in code list {codelist}")


def validate_odm(source: str | Path | IO[bytes]) -> ImportReport:
    """Return the report of checking an ODM file: schema, OID references, values (no import)."""
    return read_odm(source).report


class _DataMapper:
    """Maps SubjectData elements onto ductal subjects and forms, checking values as entry would."""

    def __init__(self, protocol: Protocol, meta: _Metadata, report: ImportReport) -> None:
        self.protocol = protocol
        self.meta = meta
        self.report = report
        self.forms = {f.key: f for f in protocol.forms}
        self.events = {e.key: e for e in protocol.schedule}

    def subject(self, element: etree._Element) -> Located | None:
        key = element.get("SubjectKey", "").strip()
        line = element.sourceline or 0
        if not key:
            self.report.error(f"line {line}", "SubjectKey", "is blank")
            return None
        subject = SubjectData(study_id=key, site="", status="")
        item = Located(subject, line, {})
        site = element.find(f"{_Q}SiteRef")
        if site is not None:
            subject.site = site.get("LocationOID", "").removeprefix("LOC.")
        for event in element.iter(f"{_Q}StudyEventData"):
            self._event(event, item)
        return item

    def _event(self, event: etree._Element, item: Located) -> None:
        oid = event.get("StudyEventOID", "")
        where = f"line {event.sourceline}"
        spec = self.events.get(oid.removeprefix("SE.")) or self.events.get(
            _key(oid.removeprefix("SE."))
        )
        repeat = event.get("StudyEventRepeatKey") or "1"
        if not repeat.isdigit() or int(repeat) < 1:
            self.report.error(where, "StudyEventRepeatKey", f"{repeat!r} is not 1, 2, ...")
            return
        for form in event.iter(f"{_Q}FormData"):
            key = self._form_key(form.get("FormOID", ""))
            target = spec
            if target is None and key is not None:
                # a foreign event: the form's only event in the protocol, if it has one
                places = [e for e in self.protocol.schedule if key in e.forms]
                if len(places) == 1:
                    target = places[0]
            if target is None:
                if key != SUBJECT_FORM:
                    self.report.error(where, oid, "is not an event of the protocol")
                    continue
                target = self.protocol.schedule[0]
            self._form(form, target.key, int(repeat), item)

    def _form_key(self, oid: str) -> str | None:
        bare = oid.removeprefix("F.")
        if bare == SUBJECT_FORM or bare in self.forms:
            return bare
        key = _key(bare)
        return key if key in self.forms else None

    def _form(self, element: etree._Element, event: str, occurrence: int, item: Located) -> None:
        oid = element.get("FormOID", "")
        line = element.sourceline or 0
        where = f"line {line}"
        form_key = self._form_key(oid) or oid.removeprefix("F.")
        values: dict[str, str] = {}
        for data in element.iter(f"{_Q}ItemData"):
            item_oid = data.get("ItemOID", "")
            if item_oid.startswith(f"I.{form_key}."):
                values[item_oid.removeprefix(f"I.{form_key}.")] = data.get("Value", "")
            elif item_oid in self.meta.item_names and not item_oid.startswith("I."):
                # a foreign item: the field is named after the ItemDef's Name
                values[_key(self.meta.item_names[item_oid])] = data.get("Value", "")
            else:
                self.report.error(f"line {data.sourceline}", item_oid, f"is not an item of {oid}")
        if form_key == SUBJECT_FORM:
            self._subject_items(values, item, where)
            return
        form = self.forms.get(form_key)
        if form is None:
            self.report.error(where, oid, "is not a form of the protocol")
            return
        raw: dict[str, Any] = {}
        for f in form.fields:
            if f.type == "multi_choice":
                ticked = [
                    c.code
                    for c in f.choices
                    if values.pop(f"{f.key}.{_oid_part(c.code)}", "0") == "1"
                ]
                if ticked:
                    raw[f.key] = ticked
                continue
            if f.key in values:
                raw[f.key] = values.pop(f.key)
        for extra in values:
            self.report.error(where, f"I.{form_key}.{extra}", "is not a field of the form")
        clean, problems = validate_form_data(form, raw)
        status = "complete"
        for problem in problems:
            if problem.message == "is required":
                status = "incomplete"
                continue
            self.report.error(where, f"I.{form_key}.{problem.field}", problem.message)
        repeat = element.get("FormRepeatKey") or "1"
        if not repeat.isdigit() or int(repeat) < 1:
            self.report.error(where, "FormRepeatKey", f"{repeat!r} is not 1, 2, ...")
            return
        fd = FormData(
            event=event,
            form=form_key,
            data=clean,
            event_instance=occurrence,
            instance=int(repeat),
            status=status,
        )
        item.subject.forms.append(fd)
        item.form_lines[id(fd)] = line

    def _subject_items(self, values: dict[str, str], item: Located, where: str) -> None:
        subject = item.subject
        for key in _SUBJECT_ITEMS:
            value = values.get(key) or None
            if value is not None or key != "site":
                setattr(
                    subject,
                    key,
                    value
                    if value is not None
                    else getattr(subject, key)
                    if key == "status"
                    else None,
                )
        subject.status = subject.status or ""
        arms = [a.key for a in self.protocol.arms]
        if subject.arm is not None and subject.arm not in arms:
            self.report.error(where, "arm", f"{subject.arm!r} is not one of {', '.join(arms)}")


def import_odm(
    session: Session,
    *,
    protocol: Protocol,
    source: str | Path | IO[bytes],
    actor: str,
    partial: bool = False,
    today: dt.date | None = None,
    progress: Callable[[int], None] | None = None,
    default_site: str | None = None,
) -> ImportReport:
    """Import the clinical data of an ODM file into ``protocol`` in the caller's transaction.

    The file is validated against the ODM 1.3.2 schema, its OID references and value types are
    checked, and each form is checked as data entry would check it. Without ``partial`` any
    problem raises a ValidationError listing all of them (with lines) and nothing is written.
    """
    content = read_odm(source, protocol=protocol)
    report = content.report
    schema_broken = any("not valid ODM" in i.message for i in report.errors)
    bad_ids: set[str] = set()
    lines_bad = {int(i.where.split()[1]) for i in report.errors if i.where.startswith("line ")}
    for item in content.subjects:
        span = {item.line, *item.form_lines.values()}
        if span & lines_bad:
            bad_ids.add(item.subject.study_id)
    if schema_broken:
        bad_ids = {item.subject.study_id for item in content.subjects}
    return write_subjects(
        session,
        protocol=protocol,
        located=content.subjects,
        report=report,
        actor=actor,
        partial=partial,
        bad_ids=bad_ids,
        today=today,
        progress=progress,
        source_name="ODM",
        default_site=default_site,
    )


# --------------------------------------------------------------------------------------------
# Metadata import


def odm_to_protocol(
    source: str | Path | IO[bytes], *, protocol_id: str | None = None, partial: bool = False
) -> tuple[Protocol | None, ImportReport]:
    """Return the protocol described by an ODM file's metadata, and the report.

    A file written by ductal comes back as the same protocol (its ``Alias Context="ductal"``
    elements carry what ODM has no place for). Any other file is mapped as REDCap dictionaries
    are: its forms and items, with a minimal study definition the report asks to complete.
    """
    from ductal.exchange.redcap_dictionary import build_protocol

    content = read_odm(source, keep_data=False)
    report = content.report
    meta = content.meta
    forms: list[dict[str, Any]] = []
    for form_oid, attrs in meta.forms.items():
        if form_oid == f"F.{SUBJECT_FORM}":
            continue
        alias = meta.aliases.get(form_oid)
        spec: dict[str, Any] = json.loads(alias) if alias else {}
        key = form_oid.removeprefix("F.")
        spec.update(key=_key(key))
        spec.setdefault("title", {"en": attrs.get("Name", key)})
        spec.setdefault("repeating", attrs.get("Repeating") == "Yes")
        fields: list[dict[str, Any]] = []
        seen: set[str] = set()
        for group in meta.form_groups.get(form_oid, []):
            for item_oid, mandatory in meta.group_items.get(group, []):
                field_spec = _field_from_item(meta, item_oid, mandatory, report)
                if field_spec is not None and field_spec["key"] not in seen:
                    seen.add(field_spec["key"])
                    fields.append(field_spec)
        spec["fields"] = fields
        forms.append(spec)
    schedule = []
    for event_oid, attrs in meta.events.items():
        alias = meta.aliases.get(event_oid)
        if alias:
            schedule.append(json.loads(alias))
            continue
        forms_here = [
            f.removeprefix("F.")
            for f in meta.event_forms.get(event_oid, [])
            if f != f"F.{SUBJECT_FORM}"
        ]
        if forms_here:
            schedule.append(
                {
                    "key": _key(event_oid.removeprefix("SE.")),
                    "label": {"en": attrs.get("Name", event_oid)},
                    "kind": "unscheduled" if attrs.get("Type") == "Unscheduled" else "follow_up",
                    "forms": [_key(f) for f in forms_here],
                }
            )
    study = json.loads(meta.study_alias) if meta.study_alias else None
    protocol = build_protocol(forms, schedule if study else None, study, protocol_id, None, report)
    if not partial:
        report.raise_if_errors("use --partial to import the valid part")
    return protocol, report


def _key(text: str) -> str:
    key = re.sub(r"[^a-z0-9_]", "_", text.lower())
    return key if re.match(r"^[a-z]", key) else f"x_{key}"


def _field_from_item(
    meta: _Metadata, item_oid: str, mandatory: bool, report: ImportReport
) -> dict[str, Any] | None:
    alias = meta.aliases.get(item_oid)
    if alias:
        return dict(json.loads(alias))
    if item_oid not in meta.items:
        return None
    if re.search(r"\.[^.]+\.[^.]+\.[^.]+$", item_oid) and item_oid.startswith("I."):
        return None  # an option item of a multiple-choice field written by ductal
    kind, codelist = meta.items[item_oid]
    name = meta.item_names.get(item_oid, item_oid)
    spec: dict[str, Any] = {
        "key": _key(name),
        "label": {"en": meta.item_questions.get(item_oid, name)},
        "required": mandatory,
    }
    if codelist:
        spec["type"] = "choice"
        spec["choices"] = [
            {"code": code, "label": {"en": label or code}}
            for code, label in meta.codelist_decodes.get(codelist, [])
        ]
    else:
        mapped = {
            "integer": "integer",
            "float": "number",
            "double": "number",
            "date": "date",
            "datetime": "datetime",
            "text": "text",
            "string": "text",
        }.get(kind)
        if mapped is None:
            report.warning("metadata", item_oid, f"data type {kind} stored as text")
            mapped = "text"
        spec["type"] = mapped
    return spec


def iter_odm_subjects(content: OdmContent) -> Iterator[SubjectData]:
    """Yield the subjects read from an ODM file."""
    for item in content.subjects:
        yield item.subject
