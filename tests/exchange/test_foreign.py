"""Files from other systems: a partner's REDCap project and a sponsor's ODM file, end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ductal import records
from ductal.db import session_scope
from ductal.errors import ValidationError
from ductal.exchange import api

from .test_odm import FOREIGN
from .test_redcap_dictionary import _csv, _row

TODAY = dt.date(2026, 11, 1)

DICTIONARY = _csv(
    [
        _row("study_id", "enrolment", "text", "Study ID"),
        _row(
            "enrol_date",
            "enrolment",
            "text",
            "Date",
            text_validation_type_or_show_slider_number="date_ymd",
            required_field="y",
        ),
        _row(
            "dx",
            "enrolment",
            "dropdown",
            "Diagnosis",
            select_choices_or_calculations="1, IGM | 2, PD",
        ),
        _row(
            "visit_date",
            "visit",
            "text",
            "Visit date",
            text_validation_type_or_show_slider_number="date_ymd",
        ),
        _row(
            "signs",
            "visit",
            "checkbox",
            "Signs",
            select_choices_or_calculations="1, Mass | 2, Abscess",
        ),
        _row("crp", "visit", "text", "CRP", text_validation_type_or_show_slider_number="number"),
    ]
)
# a classic (non-longitudinal) project: no event column; the first column is the record id
RECORDS = (
    "study_id,enrol_date,dx,enrolment_complete,visit_date,signs___1,signs___2,crp,visit_complete\n"
    "P-1,2019-03-01,1,2,2019-04-01,1,0,12.5,2\n"
    "P-2,2019-03-05,2,2,2019-04-03,0,1,,2\n"
)


def test_partner_redcap_project_imports(study: Engine) -> None:
    with session_scope(study) as session:
        protocol, report = api.import_redcap(
            session,
            actor="dm",
            dictionary=DICTIONARY,
            records_csv=RECORDS,
            protocol_id="partner-study",
            default_site="RIV",
        )
    assert report.imported["subjects"] == 2, report.to_json()
    assert [f.key for f in protocol.form("enrolment").fields] == ["enrol_date", "dx"]
    with session_scope(study) as session:
        subject = records.get_subject(session, "P-1")
        assert subject.status == "enrolled"
        visit = records.subject_records(session, subject, "visit")[0]
        assert visit.data == {"visit_date": "2019-04-01", "signs": ["1"], "crp": 12.5}


def _clinical(value: str = "F") -> bytes:
    data = f"""
 <AdminData><Location OID="LOC.X" Name="X" LocationType="Site">
  <MetaDataVersionRef StudyOID="S1" MetaDataVersionOID="V1" EffectiveDate="2024-01-01"/>
 </Location></AdminData>
 <ClinicalData StudyOID="S1" MetaDataVersionOID="V1">
  <SubjectData SubjectKey="S-001"><SiteRef LocationOID="LOC.X"/>
   <StudyEventData StudyEventOID="SE.V1">
    <FormData FormOID="F.DEMOG"><ItemGroupData ItemGroupOID="IG.DEMOG">
     <ItemData ItemOID="IT.SEX" Value="{value}"/>
     <ItemData ItemOID="IT.BRTHDAT" Value="1990-05-06"/></ItemGroupData></FormData>
    <FormData FormOID="F.VITALS"><ItemGroupData ItemGroupOID="IG.VITALS">
     <ItemData ItemOID="IT.WEIGHT" Value="61.5"/></ItemGroupData></FormData>
   </StudyEventData>
  </SubjectData>
 </ClinicalData>
</ODM>
"""
    return FOREIGN.replace("</ODM>\n", data).encode()


def test_sponsor_odm_file_imports(study: Engine, tmp_path: Path) -> None:
    path = tmp_path / "sponsor.xml"
    path.write_bytes(_clinical())
    with session_scope(study) as session:
        protocol, report = api.import_odm_file(
            session, path=path, actor="dm", protocol_id="sponsor-study", default_site="RIV"
        )
    assert report.errors == [] and report.imported["subjects"] == 1
    assert protocol.id == "sponsor-study" and protocol.screening_form == "demog"
    with session_scope(study) as session:
        subject = records.get_subject(session, "S-001")
        vitals = records.subject_records(session, subject, "vitals")[0]
        assert vitals.data == {"weight": 61.5}
        demog = records.subject_records(session, subject, "demog")[0]
        assert demog.data == {"sex": "F", "brthdat": "1990-05-06"}


def test_sponsor_odm_file_with_a_bad_code_is_refused(study: Engine, tmp_path: Path) -> None:
    path = tmp_path / "sponsor.xml"
    path.write_bytes(_clinical(value="X"))
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        api.import_odm_file(
            session, path=path, actor="dm", protocol_id="sponsor-study", default_site="RIV"
        )
    assert any("IT.SEX" in p.field and "code list" in p.message for p in caught.value.problems)
