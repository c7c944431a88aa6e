"""CDISC ODM 1.3.2: schema-valid exports, metadata and data round trips, bad files reported."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import Engine

from ductal.db import session_scope
from ductal.errors import ValidationError
from ductal.exchange.odm import (
    NS,
    audit_trail,
    import_odm,
    odm_schema,
    odm_to_protocol,
    read_odm,
    validate_odm,
    write_odm,
)
from ductal.exchange.study_data import FormData, SubjectData, collect_subjects
from ductal.models import Signature, utcnow
from ductal.protocols.loader import builtin_protocol, builtin_protocols
from ductal.protocols.model import Protocol

PROTOCOLS = builtin_protocols()
MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _odm(protocol: Protocol, subjects: list[SubjectData], **kwargs: object) -> bytes:
    out = io.StringIO()
    write_odm(
        protocol,
        subjects,
        out,
        sites=["RIV", "HILL-2"],
        created=MOMENT,
        file_oid="test",
        **kwargs,  # type: ignore[arg-type]
    )
    return out.getvalue().encode()


def _subject() -> SubjectData:
    return SubjectData(
        study_id="IMP-0001",
        site="RIV",
        status="enrolled",
        arm="lavage",
        screened_on="2018-01-02",
        enrolled_on="2018-01-03",
        forms=[
            FormData(
                "screening",
                "screening",
                {
                    "screening_date": "2018-01-02",
                    "age": 30,
                    "sex": "female",
                    "non_lactating_6m": 1,
                    "pathology_confirmed": 1,
                    "diagnosis": "igm",
                    "carcinoma_excluded": 1,
                    "consent_signed": 1,
                    "consent_date": "2018-01-02",
                },
            ),
            FormData(
                "baseline",
                "baseline",
                {
                    "assessment_date": "2018-01-03",
                    "side": "left",
                    "infection_evidence": 0,
                    "presentation": ["mass", "pain"],
                    "height_cm": 160.0,
                    "weight_kg": 60.0,
                    "bmi": 23.4,
                    "wbc_10e9_l": 7.25,
                },
            ),
            FormData(
                "lavage",
                "lavage_session",
                {
                    "session_date": "2018-01-03",
                    "session_number": 1,
                    "procedure": "infusion",
                    "steroid_agent": "dexamethasone",
                    "steroid_dose_mg": 5.0,
                    "antibiotic_added": 0,
                },
                event_instance=2,
                instance=2,
            ),
            FormData(
                "unscheduled",
                "adverse_event",
                {
                    "term": "pain",
                    "onset_date": "2018-01-05",
                    "ctcae_grade": 1,
                    "serious": 0,
                    "relatedness": "possible",
                    "outcome": "recovered",
                },
            ),
        ],
    )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=[p.id for p in PROTOCOLS])
def test_metadata_export_is_schema_valid_and_round_trips(protocol: Protocol) -> None:
    xml = _odm(protocol, [])
    assert odm_schema().validate(etree.fromstring(xml))
    assert validate_odm(io.BytesIO(xml)).issues == []
    imported, report = odm_to_protocol(io.BytesIO(xml))
    assert imported == protocol
    assert report.issues == []


def test_metadata_has_the_odm_structure() -> None:
    protocol = builtin_protocol("lavage-observational")
    root = etree.fromstring(_odm(protocol, [_subject()]))
    q = f"{{{NS}}}"
    mdv = root.find(f"{q}Study/{q}MetaDataVersion")
    assert mdv is not None
    events = {e.get("OID"): e for e in mdv.iter(f"{q}StudyEventDef")}
    assert events["SE.lavage"].get("Repeating") == "Yes"
    assert events["SE.baseline"].get("Repeating") == "No"
    items = {i.get("OID"): i for i in mdv.iter(f"{q}ItemDef")}
    assert items["I.baseline.height_cm"].get("DataType") == "float"
    assert items["I.baseline.height_cm"].get("SignificantDigits") == "1"
    assert items["I.screening.screening_date"].get("DataType") == "date"
    assert "I.baseline.presentation.abscess" in items  # one item per checkbox option
    codes = {c.get("OID"): c for c in mdv.iter(f"{q}CodeList")}
    assert {i.get("CodedValue") for i in codes["CL.screening.sex"]} == {"female", "male"}
    conditions = {c.get("OID"): c for c in mdv.iter(f"{q}ConditionDef")}
    expression = conditions["C.screening.diagnosis"].find(f"{q}FormalExpression")
    assert expression is not None and expression.text == "not ([pathology_confirmed] = 1)"
    ranges = items["I.screening.age"].findall(f"{q}RangeCheck")
    assert [(r.get("Comparator"), r.findtext(f"{q}CheckValue")) for r in ranges] == [
        ("GE", "16"),
        ("LE", "70"),
    ]
    # clinical data nests SubjectData > StudyEventData > FormData > ItemGroupData > ItemData
    path = (
        f"{q}ClinicalData/{q}SubjectData/{q}StudyEventData/{q}FormData/{q}ItemGroupData/{q}ItemData"
    )
    assert len(root.findall(path)) > 10
    lavage = [e for e in root.iter(f"{q}StudyEventData") if e.get("StudyEventOID") == "SE.lavage"]
    assert lavage[0].get("StudyEventRepeatKey") == "2"
    form = lavage[0].find(f"{q}FormData")
    assert form is not None and form.get("FormRepeatKey") == "2"


def test_data_and_audit_round_trip_through_the_database(cohort: Engine) -> None:
    protocol = builtin_protocol("lavage-observational")
    with session_scope(cohort) as session:
        subjects = list(collect_subjects(session, protocol.id))
        signed = subjects[0].forms[1]
        assert signed.record_id is not None
        session.add(
            Signature(
                form_record_id=signed.record_id,
                signer="investigator1",
                meaning="approval",
                record_version=1,
                signed_at=utcnow(),
            )
        )
        session.flush()
        trail = audit_trail(
            session, [f.record_id for s in subjects for f in s.forms if f.record_id]
        )
        xml = _odm(protocol, subjects, trail=trail)
    report = validate_odm(io.BytesIO(xml))
    assert report.issues == []
    root = etree.fromstring(xml)
    q = f"{{{NS}}}"
    assert len(list(root.iter(f"{q}AuditRecord"))) == sum(len(s.forms) for s in subjects)
    signatures = list(root.iter(f"{q}Signature"))
    assert len(signatures) == 1
    assert root.find(f"{q}AdminData/{q}SignatureDef") is not None
    # import under new ids into the same database, then export again: the same data
    renamed = xml.replace(b'SubjectKey="LAV-', b'SubjectKey="IMP-')
    with session_scope(cohort) as session:
        result = import_odm(session, protocol=protocol, source=io.BytesIO(renamed), actor="odm")
    assert result.errors == [] and result.imported["subjects"] == len(subjects)
    with session_scope(cohort) as session:
        again = [s for s in collect_subjects(session, protocol.id) if s.study_id.startswith("IMP")]
    original = _odm(protocol, subjects).replace(b'SubjectKey="LAV-', b'SubjectKey="IMP-')
    assert _odm(protocol, again) == original


def _bad_file() -> tuple[bytes, dict[str, int]]:
    protocol = builtin_protocol("lavage-observational")
    lines = _odm(protocol, [_subject()]).decode().split("\n")
    where: dict[str, int] = {}
    for n, line in enumerate(lines, start=1):
        if "SubjectKey" in line:
            line = line.replace(
                'ItemOID="I.baseline.side" Value="left"', 'ItemOID="I.baseline.side" Value="middle"'
            )
            line = line.replace(
                'ItemOID="I.screening.age" Value="30"', 'ItemOID="I.screening.age" Value="thirty"'
            )
            line = line.replace(
                'ItemOID="I.baseline.assessment_date" Value="2018-01-03"',
                'ItemOID="I.baseline.assessment_date" Value="03/01/2018"',
            )
            line = line.replace('ItemOID="I.baseline.height_cm"', 'ItemOID="I.baseline.nowhere"')
            where["data"] = n
            lines[n - 1] = line
    return "\n".join(lines).encode(), where


def test_values_and_oids_are_checked_beyond_the_schema() -> None:
    xml, where = _bad_file()
    assert odm_schema().validate(etree.fromstring(xml))  # the schema alone accepts it
    report = validate_odm(io.BytesIO(xml))
    found = {(i.where, i.item): i.message for i in report.errors}
    line = f"line {where['data']}"
    assert "not in code list" in found[(line, "I.baseline.side")]
    assert "not a valid integer" in found[(line, "I.screening.age")]
    assert "not a valid date" in found[(line, "I.baseline.assessment_date")]
    assert "undefined ItemDef" in found[(line, "I.baseline.nowhere")]


def test_schema_failures_are_all_listed() -> None:
    protocol = builtin_protocol("lavage-observational")
    xml = _odm(protocol, [_subject()]).decode()
    xml = xml.replace('Repeating="No"', 'Repeating="Maybe"', 1)
    xml = xml.replace("<SiteRef", "<Bogus/><SiteRef", 1)
    xml = xml.replace('FormRef FormOID="F.baseline"', 'FormRef FormOID="F.missing"', 1)
    report = validate_odm(io.BytesIO(xml.encode()))
    messages = [str(i) for i in report.errors]
    assert any("'Maybe'" in m for m in messages)
    assert any("Bogus" in m for m in messages)
    assert any("F.missing" in m and "undefined FormDef" in m for m in messages)


def test_bad_odm_imports_nothing_unless_partial(study: Engine) -> None:
    protocol = builtin_protocol("lavage-observational")
    good = _subject()
    other = _subject()
    other.study_id = "IMP-0002"
    xml = _odm(protocol, [good, other]).decode()
    bad = xml.replace('SubjectKey="IMP-0002"', 'SubjectKey="IMP-0002"', 1).split("\n")
    for n, line in enumerate(bad):
        if 'SubjectKey="IMP-0002"' in line:
            bad[n] = line.replace('Value="female"', 'Value="unknown"')
    text = "\n".join(bad).encode()
    today = dt.date(2026, 11, 1)
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        import_odm(session, protocol=protocol, source=io.BytesIO(text), actor="odm", today=today)
    assert any("I.screening.sex" in p.field for p in caught.value.problems)
    with session_scope(study) as session:
        report = import_odm(
            session,
            protocol=protocol,
            source=io.BytesIO(text),
            actor="odm",
            partial=True,
            today=today,
        )
    assert report.imported["subjects"] == 1 and report.skipped == ["IMP-0002"]


FOREIGN = f"""<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="{NS}" FileType="Snapshot" FileOID="f1" CreationDateTime="2024-01-01T00:00:00"
     ODMVersion="1.3.2">
 <Study OID="S1">
  <GlobalVariables><StudyName>P</StudyName><StudyDescription>P</StudyDescription>
   <ProtocolName>P</ProtocolName></GlobalVariables>
  <MetaDataVersion OID="V1" Name="v1">
   <StudyEventDef OID="SE.V1" Name="Visit 1" Repeating="No" Type="Scheduled">
    <FormRef FormOID="F.DEMOG" Mandatory="Yes"/><FormRef FormOID="F.VITALS" Mandatory="No"/>
   </StudyEventDef>
   <FormDef OID="F.DEMOG" Name="Demographics" Repeating="No">
    <ItemGroupRef ItemGroupOID="IG.DEMOG" Mandatory="Yes"/></FormDef>
   <FormDef OID="F.VITALS" Name="Vitals" Repeating="No">
    <ItemGroupRef ItemGroupOID="IG.VITALS" Mandatory="Yes"/></FormDef>
   <ItemGroupDef OID="IG.DEMOG" Name="Demog" Repeating="No">
    <ItemRef ItemOID="IT.SEX" Mandatory="Yes"/><ItemRef ItemOID="IT.BRTHDAT" Mandatory="No"/>
   </ItemGroupDef>
   <ItemGroupDef OID="IG.VITALS" Name="Vitals" Repeating="No">
    <ItemRef ItemOID="IT.WEIGHT" Mandatory="No"/></ItemGroupDef>
   <ItemDef OID="IT.SEX" Name="SEX" DataType="text"><CodeListRef CodeListOID="CL.SEX"/></ItemDef>
   <ItemDef OID="IT.BRTHDAT" Name="BRTHDAT" DataType="date"/>
   <ItemDef OID="IT.WEIGHT" Name="WEIGHT" DataType="float"/>
   <CodeList OID="CL.SEX" Name="Sex" DataType="text">
    <CodeListItem CodedValue="F"><Decode><TranslatedText>Female</TranslatedText></Decode>
    </CodeListItem>
    <CodeListItem CodedValue="M"><Decode><TranslatedText>Male</TranslatedText></Decode>
    </CodeListItem>
   </CodeList>
  </MetaDataVersion>
 </Study>
</ODM>
"""


def test_foreign_odm_metadata_maps_to_a_protocol() -> None:
    protocol, report = odm_to_protocol(io.BytesIO(FOREIGN.encode()), protocol_id="partner-odm")
    assert protocol is not None
    demog = protocol.form("demog")
    assert [(f.key, f.type) for f in demog.fields] == [("sex", "choice"), ("brthdat", "date")]
    assert [c.code for c in demog.field("sex").choices] == ["F", "M"]
    assert protocol.form("vitals").field("weight").type == "number"
    assert any("study definition" in w.message for w in report.warnings)


def test_missing_oids_in_foreign_metadata_are_reported() -> None:
    broken = FOREIGN.replace('<ItemRef ItemOID="IT.WEIGHT"', '<ItemRef ItemOID="IT.HEIGHT"')
    with pytest.raises(ValidationError) as caught:
        odm_to_protocol(io.BytesIO(broken.encode()), protocol_id="partner-odm")
    assert any(p.field.endswith("IT.HEIGHT") for p in caught.value.problems)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 40)), max_size=4),
    junk=st.sampled_from(["", "<", "&", '"', "<X/>", "</ItemData>", "\x00", 'Value="x"']),
)
def test_malformed_odm_never_crashes(cuts: list[tuple[int, int]], junk: str) -> None:
    protocol = builtin_protocol("lavage-observational")
    xml = _odm(protocol, [_subject()]).decode()
    for start, length in cuts:
        start %= len(xml)
        xml = xml[:start] + junk + xml[start + length :]
    content = read_odm(io.BytesIO(xml.encode("utf-8", "replace")), protocol=protocol)
    for issue in content.report.issues:
        assert issue.where.startswith("line")
    if not cuts or (not junk and all(n == 0 for _, n in cuts)):
        assert content.report.errors == []
