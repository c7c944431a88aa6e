"""FHIR Bundles: R4B and R5 validate, right codes, bindings enforced, Patient pseudonymous."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import Engine, select

from ductal.db import session_scope
from ductal.errors import PermissionDenied
from ductal.exchange import api
from ductal.exchange.fhir import DIAGNOSES, binding_problems, subject_bundle, validate_bundle
from ductal.models import AuditEntry
from ductal.protocols.loader import builtin_protocol
from ductal.vault import Vault

from .conftest import SYNTHETIC_NAME
from .test_odm import _subject


def _verhoeff_ok(number: str) -> bool:
    """Return True when ``number`` passes the Verhoeff check SNOMED CT identifiers carry."""
    d = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ]
    p = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ]
    c = 0
    for i, digit in enumerate(reversed(number)):
        c = d[c][p[i % 8][int(digit)]]
    return c == 0


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_snomed_codes_are_well_formed_concept_ids() -> None:
    for code, _display in DIAGNOSES.values():
        assert _verhoeff_ok(code), code
        assert code[-3:-1] == "00"  # partition identifier 00: a concept in the core release
    assert DIAGNOSES["igm"] == ("237444008", "Granulomatous mastitis")
    assert DIAGNOSES["pd"] == ("83620003", "Nonpuerperal mastitis")
    assert not _verhoeff_ok("237444009")  # the check catches a wrong digit


@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_bundle_validates_in_both_versions(version: str) -> None:
    protocol = builtin_protocol("lavage-observational")
    bundle = subject_bundle(protocol, _subject(), version=version)  # type: ignore[arg-type]
    assert validate_bundle(bundle, version) == []  # type: ignore[arg-type]
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {
        "Patient",
        "ResearchStudy",
        "ResearchSubject",
        "Condition",
        "Consent",
        "Observation",
        "Procedure",
        "MedicationStatement",
    } <= kinds
    condition = _resources(bundle, "Condition")[0]
    assert condition["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "237444008",
        "display": "Granulomatous mastitis",
    }
    labs = {
        o["code"]["coding"][0]["code"]: o
        for o in _resources(bundle, "Observation")
        if o["code"]["coding"][0]["system"] == "http://loinc.org"
    }
    assert labs["6690-2"]["valueQuantity"]["value"] == 7.25
    subject = _resources(bundle, "ResearchSubject")[0]
    if version == "R4B":
        assert subject["status"] == "on-study" and subject["assignedArm"] == "lavage"
    else:
        assert subject["status"] == "active" and subject["assignedComparisonGroup"] == "lavage"


def test_patient_is_pseudonymous_by_default() -> None:
    protocol = builtin_protocol("lavage-observational")
    bundle = subject_bundle(protocol, _subject())
    patient = _resources(bundle, "Patient")[0]
    assert set(patient) <= {"resourceType", "id", "identifier", "gender", "meta"}
    assert patient["identifier"][0]["value"] == "IMP-0001"
    assert patient["meta"]["security"][0]["code"] == "PSEUDED"
    identified = subject_bundle(
        protocol, _subject(), identity={"name": "A B", "date_of_birth": "1980-02-03"}
    )
    person = _resources(identified, "Patient")[0]
    assert person["name"] == [{"text": "A B"}] and person["birthDate"] == "1980-02-03"


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        pytest.param("Patient", ("gender",), "woman", id="gender"),
        pytest.param("Procedure", ("status",), "done", id="procedure-status"),
        pytest.param("ResearchSubject", ("status",), "enrolled", id="subject-status"),
        pytest.param("Observation", ("status",), "ok", id="observation-status"),
        pytest.param("Consent", ("status",), "signed", id="consent-status"),
        pytest.param("MedicationStatement", ("status",), "taken", id="medication-status"),
    ],
)
@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_required_bindings_the_library_skips_are_checked(
    version: str, kind: str, path: tuple[str, ...], bad: str
) -> None:
    protocol = builtin_protocol("lavage-observational")
    bundle = subject_bundle(protocol, _subject(), version=version)  # type: ignore[arg-type]
    broken = copy.deepcopy(bundle)
    resource = _resources(broken, kind)[0]
    resource[path[0]] = bad
    problems = binding_problems(broken, version)  # type: ignore[arg-type]
    assert problems == [f"{kind}.{path[0]}: {bad!r} is not in the required value set"]
    assert validate_bundle(broken, version)  # type: ignore[arg-type]


def test_condition_status_codes_are_checked() -> None:
    protocol = builtin_protocol("lavage-observational")
    bundle = subject_bundle(protocol, _subject())
    _resources(bundle, "Condition")[0]["clinicalStatus"]["coding"][0]["code"] = "ongoing"
    assert binding_problems(bundle, "R4B") == [
        "Condition.clinicalStatus.coding.code: 'ongoing' is not in the required value set"
    ]


def test_identified_export_needs_an_admin_and_is_audited(
    cohort: Engine, vault: Vault, tmp_path: Any
) -> None:
    with pytest.raises(PermissionDenied), session_scope(cohort) as session:
        api.export_fhir(
            session,
            protocol_id="lavage-observational",
            out=tmp_path / "x",
            reveal_identity=True,
            actor="coord",
            actor_role="coordinator",
            vault=vault,
        )
    with session_scope(cohort) as session:
        result = api.export_fhir(
            session,
            protocol_id="lavage-observational",
            out=tmp_path / "y",
            reveal_identity=True,
            actor="boss",
            actor_role="admin",
            vault=vault,
            version="R5",
        )
    texts = "".join(p.read_text() for p in result.files)
    assert SYNTHETIC_NAME in texts
    assert "IDENTIFIED" in " ".join(result.manifest["notes"])
    with session_scope(cohort) as session:
        disclosures = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "disclose")
        ).all()
        assert disclosures and all(d.actor == "boss" for d in disclosures)


@pytest.mark.parametrize("version", ["R4B", "R5"])
def test_ductoscopy_session_is_a_procedure_with_its_period(version: str) -> None:
    from ductal.exchange.study_data import FormData

    subject = _subject()
    subject.forms.append(
        FormData(
            "lavage",
            "ductoscopy_procedure",
            {
                "procedure_date": "2018-01-04",
                "start_time": "2018-01-04T09:00:00Z",
                "end_time": "2018-01-04T09:12:00Z",
            },
        )
    )
    bundle = subject_bundle(builtin_protocol("lavage-observational"), subject, version=version)  # type: ignore[arg-type]
    assert validate_bundle(bundle, version) == []  # type: ignore[arg-type]
    scope = [
        p for p in _resources(bundle, "Procedure") if p["code"]["text"] == "Mammary ductoscopy"
    ]
    period = scope[0]["performedPeriod" if version == "R4B" else "occurrencePeriod"]
    assert period == {"start": "2018-01-04T09:00:00Z", "end": "2018-01-04T09:12:00Z"}
