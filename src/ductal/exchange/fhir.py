"""FHIR: one subject's record as a Bundle (R4B or R5), validated, with required bindings checked.

The Bundle (``type: collection``) holds the Patient (pseudonymous unless an administrator asks
for identifiers), the ResearchStudy, the ResearchSubject, the Condition (SNOMED CT coded), one
Procedure per ductal lavage or massage session, Observations for laboratory values, ultrasound
lesion size and response assessments, MedicationStatements for drug therapies, AdverseEvents and
the Consent. Every resource is validated by ``fhir.resources`` (structure and data types); that
library does not enforce *required* value-set bindings, so :func:`binding_problems` checks the
codes of ``status``, ``gender`` and the other required-bound elements written here.

Codes: SNOMED CT 237444008 |Granulomatous mastitis| for IGM and 83620003 |Nonpuerperal mastitis|
for periductal mastitis (see ``docs/exchange.md`` for how they were checked; SNOMED CT has no
concept for periductal mastitis we could confirm, so the broader non-puerperal concept is used
with the ductal diagnosis as text). LOINC 1988-5 (CRP), 6690-2 (leukocytes), 2842-3 (prolactin),
3016-3 (TSH). Everything else uses the local code system ``urn:ductal:code``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic

from ductal.errors import Problem, ValidationError
from ductal.exchange.study_data import FormData, SubjectData
from ductal.protocols.model import Protocol

__all__ = [
    "SNOMED",
    "FhirVersion",
    "binding_problems",
    "subject_bundle",
    "validate_bundle",
    "write_bundles",
]

FhirVersion = Literal["R4B", "R5"]
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:ductal:code"
STUDY_ID_SYSTEM = "urn:ductal:study-id"

DIAGNOSES: dict[str, tuple[str, str]] = {
    "igm": ("237444008", "Granulomatous mastitis"),
    "pd": ("83620003", "Nonpuerperal mastitis"),
}
LABS: dict[str, tuple[str, str, str, str]] = {
    # field: (LOINC, display, UCUM unit, unit text)
    "crp_mg_l": ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", "mg/L"),
    "wbc_10e9_l": (
        "6690-2",
        "Leukocytes [#/volume] in Blood by Automated count",
        "10*9/L",
        "10⁹/L",
    ),
    "prolactin_ng_ml": ("2842-3", "Prolactin [Mass/volume] in Serum or Plasma", "ng/mL", "ng/mL"),
    "tsh_miu_l": ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", "mIU/L"),
}
_SIZES = ("us_size_1_mm", "us_size_2_mm", "us_size_3_mm")
_DRUG_THERAPIES = {"systemic_steroid", "methotrexate", "antibiotics"}

# Required bindings fhir.resources does not enforce: element path -> allowed codes, per version.
_COMMON_BINDINGS: dict[str, dict[str, frozenset[str]]] = {
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
    "Bundle": {
        "type": frozenset(
            {
                "document",
                "message",
                "transaction",
                "transaction-response",
                "batch",
                "batch-response",
                "history",
                "searchset",
                "collection",
                "subscription-notification",
            }
        )
    },
    "Procedure": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "not-done",
                "on-hold",
                "stopped",
                "completed",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "Observation": {
        "status": frozenset(
            {
                "registered",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "Condition": {
        "clinicalStatus.coding.code": frozenset(
            {"active", "recurrence", "relapse", "inactive", "remission", "resolved", "unknown"}
        ),
        "verificationStatus.coding.code": frozenset(
            {
                "unconfirmed",
                "provisional",
                "differential",
                "confirmed",
                "refuted",
                "entered-in-error",
            }
        ),
    },
}
_BINDINGS: dict[str, dict[str, dict[str, frozenset[str]]]] = {
    "R4B": {
        "ResearchStudy": {
            "status": frozenset(
                {
                    "active",
                    "administratively-completed",
                    "approved",
                    "closed-to-accrual",
                    "closed-to-accrual-and-intervention",
                    "completed",
                    "disapproved",
                    "in-review",
                    "temporarily-closed-to-accrual",
                    "temporarily-closed-to-accrual-and-intervention",
                    "withdrawn",
                }
            )
        },
        "ResearchSubject": {
            "status": frozenset(
                {
                    "candidate",
                    "eligible",
                    "follow-up",
                    "ineligible",
                    "not-registered",
                    "off-study",
                    "on-study",
                    "on-study-intervention",
                    "on-study-observation",
                    "pending-on-study",
                    "potential-candidate",
                    "screening",
                    "withdrawn",
                }
            )
        },
        "MedicationStatement": {
            "status": frozenset(
                {
                    "active",
                    "completed",
                    "entered-in-error",
                    "intended",
                    "stopped",
                    "on-hold",
                    "unknown",
                    "not-taken",
                }
            )
        },
        "AdverseEvent": {"actuality": frozenset({"actual", "potential"})},
        "Consent": {
            "status": frozenset(
                {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}
            )
        },
    },
    "R5": {
        "ResearchStudy": {"status": frozenset({"draft", "active", "retired", "unknown"})},
        "ResearchSubject": {"status": frozenset({"draft", "active", "retired", "unknown"})},
        "MedicationStatement": {"status": frozenset({"recorded", "entered-in-error", "draft"})},
        "AdverseEvent": {
            "status": frozenset({"in-progress", "completed", "entered-in-error", "unknown"}),
            "actuality": frozenset({"actual", "potential"}),
        },
        "Consent": {
            "status": frozenset(
                {"draft", "active", "inactive", "not-done", "entered-in-error", "unknown"}
            )
        },
    },
}


def _model_class(version: FhirVersion, resource_type: str) -> Any:
    if version == "R4B":
        from fhir.resources.R4B import get_fhir_model_class as r4b

        return r4b(resource_type)
    from fhir.resources import get_fhir_model_class as r5

    return r5(resource_type)


def _values(node: Any, path: list[str]) -> list[Any]:
    if not path:
        return [node]
    if isinstance(node, list):
        return [v for item in node for v in _values(item, path)]
    if isinstance(node, Mapping) and path[0] in node:
        return _values(node[path[0]], path[1:])
    return []


def binding_problems(resource: Mapping[str, Any], version: FhirVersion) -> list[str]:
    """Return the required-binding violations of one resource (as JSON), e.g. a bad ``gender``."""
    kind = str(resource.get("resourceType", ""))
    rules = {**_COMMON_BINDINGS.get(kind, {}), **_BINDINGS[version].get(kind, {})}
    problems = []
    for path, allowed in rules.items():
        for value in _values(resource, path.split(".")):
            if value not in allowed:
                problems.append(f"{kind}.{path}: {value!r} is not in the required value set")
    if kind == "Bundle":
        for entry in resource.get("entry", []):
            problems.extend(binding_problems(entry.get("resource", {}), version))
    return problems


def validate_bundle(bundle: Mapping[str, Any], version: FhirVersion) -> list[str]:
    """Return every problem of a Bundle: fhir.resources validation, then required bindings."""
    problems: list[str] = []
    try:
        _model_class(version, "Bundle").model_validate(dict(bundle))
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems.append(".".join(str(p) for p in err["loc"]) + ": " + str(err["msg"]))
    problems.extend(binding_problems(bundle, version))
    return problems


# --------------------------------------------------------------------------------------------
# Building


def _local(code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": LOCAL, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or code}


class _Builder:
    def __init__(self, protocol: Protocol, subject: SubjectData, version: FhirVersion) -> None:
        self.protocol = protocol
        self.subject = subject
        self.version = version
        self.entries: list[dict[str, Any]] = []
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ductal:{protocol.id}")
        self.patient_ref = self.ref("Patient", subject.study_id)

    def ref(self, kind: str, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(self.namespace, f'{kind}/{self.subject.study_id}/{key}')}"

    def add(self, kind: str, key: str, body: dict[str, Any]) -> str:
        url = self.ref(kind, key)
        resource = {"resourceType": kind, "id": url.removeprefix("urn:uuid:"), **body}
        self.entries.append({"fullUrl": url, "resource": resource})
        return url

    def subject_field(self) -> dict[str, Any]:
        return {"subject": {"reference": self.patient_ref}}


def _fhir_id(key: str) -> str:
    """Return an arm key as a FHIR id (letters, digits, '-' and '.')."""
    return key.replace("_", "-")


def _screening(subject: SubjectData, protocol: Protocol) -> dict[str, Any]:
    for fd in subject.forms:
        if fd.form == protocol.screening_form:
            return fd.data
    return {}


def _research_subject_status(subject: SubjectData, version: FhirVersion) -> dict[str, Any]:
    r4b = {
        "screened": "screening",
        "eligible": "eligible",
        "ineligible": "ineligible",
        "consented": "pending-on-study",
        "enrolled": "on-study",
        "completed": "off-study",
        "withdrawn": "withdrawn",
        "lost_to_follow_up": "off-study",
    }
    if version == "R4B":
        return {"status": r4b.get(subject.status, "candidate")}
    state = _local(subject.status, subject.status.replace("_", " "))
    return {"status": "active", "progress": [{"type": _local("enrolment"), "subjectState": state}]}


def subject_bundle(
    protocol: Protocol,
    subject: SubjectData,
    *,
    version: FhirVersion = "R4B",
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return one subject's record as a FHIR Bundle (JSON-ready dict) in ``version``.

    The Patient carries only the study id unless ``identity`` (the decrypted identifiers, which
    only an administrator may ask for) is given. Raises ValidationError when the Bundle fails
    fhir.resources validation or a required binding (a defect in ductal, not in the data).
    """
    b = _Builder(protocol, subject, version)
    screening = _screening(subject, protocol)
    patient: dict[str, Any] = {
        "identifier": [{"system": f"{STUDY_ID_SYSTEM}:{protocol.id}", "value": subject.study_id}],
    }
    if identity is None:
        # pseudonymised: only the study id links the record to a person
        patient["meta"] = {
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "PSEUDED",
                }
            ]
        }
    sex = screening.get("sex")
    if sex in ("female", "male"):
        patient["gender"] = sex
    if identity is not None:
        if identity.get("name"):
            patient["name"] = [{"text": str(identity["name"])}]
        if identity.get("date_of_birth"):
            patient["birthDate"] = str(identity["date_of_birth"])
        if identity.get("hospital_record_number"):
            patient["identifier"].append(
                {
                    "system": "urn:ductal:hospital-record-number",
                    "value": str(identity["hospital_record_number"]),
                }
            )
        if identity.get("phone"):
            patient["telecom"] = [{"system": "phone", "value": str(identity["phone"])}]
    b.entries.append(
        {
            "fullUrl": b.patient_ref,
            "resource": {
                "resourceType": "Patient",
                "id": b.patient_ref.removeprefix("urn:uuid:"),
                **patient,
            },
        }
    )

    study: dict[str, Any] = {"title": protocol.title.en, "status": "active"}
    if protocol.registration:
        study["identifier"] = [
            {"system": "https://clinicaltrials.gov", "value": protocol.registration}
        ]
    groups = [{"name": a.key, "description": a.label.en} for a in protocol.arms]
    if version == "R4B":
        study["arm"] = groups
    else:
        study["comparisonGroup"] = [{**g, "linkId": _fhir_id(g["name"])} for g in groups]
    study_ref = b.add("ResearchStudy", protocol.id, study)

    rs: dict[str, Any] = {
        "study": {"reference": study_ref},
        **_research_subject_status(subject, version),
    }
    rs["identifier"] = [{"system": f"{STUDY_ID_SYSTEM}:{protocol.id}", "value": subject.study_id}]
    if version == "R4B":
        rs["individual"] = {"reference": b.patient_ref}
        if subject.arm:
            rs["assignedArm"] = subject.arm
            rs["actualArm"] = subject.arm
    else:
        rs["subject"] = {"reference": b.patient_ref}
        if subject.arm:
            rs["assignedComparisonGroup"] = _fhir_id(subject.arm)
            rs["actualComparisonGroup"] = _fhir_id(subject.arm)
    if subject.enrolled_on:
        rs["period"] = {"start": subject.enrolled_on}
    b.add("ResearchSubject", "subject", rs)

    diagnosis = screening.get("diagnosis")
    if diagnosis in DIAGNOSES:
        code, display = DIAGNOSES[diagnosis]
        label = {"igm": "Idiopathic granulomatous mastitis", "pd": "Periductal mastitis"}[diagnosis]
        condition: dict[str, Any] = {
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed"
                        if screening.get("pathology_confirmed") == 1
                        else "provisional",
                    }
                ]
            },
            "code": {
                "coding": [{"system": SNOMED, "code": code, "display": display}],
                "text": label,
            },
            **b.subject_field(),
        }
        if screening.get("screening_date"):
            condition["recordedDate"] = screening["screening_date"]
        b.add("Condition", "diagnosis", condition)

    if screening.get("consent_signed") == 1:
        consent: dict[str, Any] = {"status": "active"}
        if version == "R4B":
            consent["scope"] = {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "research",
                    }
                ]
            }
            consent["category"] = [
                {"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}
            ]
            consent["patient"] = {"reference": b.patient_ref}
            if screening.get("consent_date"):
                consent["dateTime"] = screening["consent_date"]
        else:
            consent["subject"] = {"reference": b.patient_ref}
            consent["category"] = [_local("research_consent", "Research consent")]
            if screening.get("consent_date"):
                consent["date"] = screening["consent_date"]
        b.add("Consent", "consent", consent)

    for fd in subject.forms:
        _form_resources(b, fd)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(b.namespace, f"Bundle/{subject.study_id}")),
        "type": "collection",
        "entry": b.entries,
    }


def _form_date(fd: FormData) -> str | None:
    for key in (
        "session_date",
        "procedure_date",
        "assessment_date",
        "result_date",
        "start_date",
        "onset_date",
        "end_date",
    ):
        value = fd.data.get(key)
        if isinstance(value, str):
            return value
    return None


def _observation(
    b: _Builder,
    key: str,
    code: dict[str, Any],
    value: dict[str, Any],
    day: str | None,
    category: str,
) -> None:
    body: dict[str, Any] = {
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": category,
                    }
                ]
            }
        ],
        "code": code,
        **b.subject_field(),
        **value,
    }
    if day:
        body["effectiveDateTime"] = day
    b.add("Observation", key, body)


def _medication(b: _Builder, key: str, text: str, day: str | None, dosage: str | None) -> None:
    concept = _local(text.lower().replace(" ", "_"), text)
    body: dict[str, Any] = {**b.subject_field()}
    if b.version == "R4B":
        body["status"] = "completed"
        body["medicationCodeableConcept"] = concept
        if day:
            body["effectiveDateTime"] = day
    else:
        body["status"] = "recorded"
        body["medication"] = {"concept": concept}
        if day:
            body["effectiveDateTime"] = day
    if dosage:
        body["dosage"] = [{"text": dosage}]
    b.add("MedicationStatement", key, body)


def _form_resources(b: _Builder, fd: FormData) -> None:
    data = fd.data
    day = _form_date(fd)
    key = f"{fd.event}.{fd.event_instance}.{fd.form}.{fd.instance}"
    for field, (code, display, ucum, unit) in LABS.items():
        if isinstance(data.get(field), int | float):
            _observation(
                b,
                f"{key}.{field}",
                {"coding": [{"system": LOINC, "code": code, "display": display}]},
                {
                    "valueQuantity": {
                        "value": data[field],
                        "unit": unit,
                        "system": UCUM,
                        "code": ucum,
                    }
                },
                day,
                "laboratory",
            )
    sizes = [data[s] for s in _SIZES if isinstance(data.get(s), int | float)]
    if sizes:
        _observation(
            b,
            f"{key}.us_largest",
            _local("us_largest_diameter", "Largest breast lesion diameter by ultrasound"),
            {"valueQuantity": {"value": max(sizes), "unit": "mm", "system": UCUM, "code": "mm"}},
            day,
            "imaging",
        )
    response = data.get("investigator_response")
    if isinstance(response, str):
        labels = {
            "cr": "Complete response",
            "pr": "Partial response",
            "sd": "Stable disease",
            "pd": "Progressive disease",
        }
        _observation(
            b,
            f"{key}.response",
            _local("investigator_response", "Investigator's response"),
            {"valueCodeableConcept": _local(response, labels.get(response, response))},
            day,
            "exam",
        )
    if fd.form == "lavage_session" and isinstance(data.get("procedure"), str):
        infusion = data["procedure"] == "infusion"
        text = "Ductal lavage (intraductal infusion)" if infusion else "Breast massage"
        body: dict[str, Any] = {
            "status": "completed",
            "code": _local(f"ductal_{data['procedure']}", text),
            **b.subject_field(),
        }
        if day:
            body["performedDateTime" if b.version == "R4B" else "occurrenceDateTime"] = day
        b.add("Procedure", key, body)
        if infusion and isinstance(data.get("steroid_agent"), str):
            dose = data.get("steroid_dose_mg")
            _medication(
                b,
                f"{key}.steroid",
                str(data["steroid_agent"]).capitalize(),
                day,
                f"{dose} mg intraductal" if dose is not None else "intraductal",
            )
        if infusion and data.get("antibiotic_added") == 1:
            _medication(
                b,
                f"{key}.antibiotic",
                str(data.get("antibiotic_agent") or "Antibiotic"),
                day,
                "intraductal",
            )
    if fd.form == "ductoscopy_procedure":
        body = {
            "status": "completed",
            "code": _local("ductoscopy", "Mammary ductoscopy"),
            **b.subject_field(),
        }
        start, end = data.get("start_time"), data.get("end_time")
        if isinstance(start, str):
            period = {"start": start, **({"end": end} if isinstance(end, str) else {})}
            body["performedPeriod" if b.version == "R4B" else "occurrencePeriod"] = period
        elif day:
            body["performedDateTime" if b.version == "R4B" else "occurrenceDateTime"] = day
        b.add("Procedure", key, body)
    if fd.form == "pathology_result" and isinstance(data.get("result"), str):
        result = str(data["result"])
        _observation(
            b,
            f"{key}.pathology",
            _local("pathology_result", "Pathology result"),
            {"valueCodeableConcept": _local(result, result.replace("_", " "))},
            day,
            "laboratory",
        )
    if fd.form == "treatment_course" and isinstance(data.get("regimen"), str):
        parts = []
        if data.get("prednisolone_mg_day") is not None:
            parts.append(f"prednisolone {data['prednisolone_mg_day']} mg/day")
        if data.get("methotrexate_mg_week") is not None:
            parts.append(f"methotrexate {data['methotrexate_mg_week']} mg/week")
        _medication(b, key, str(data["regimen"]).replace("_", " "), day, "; ".join(parts) or None)
    if fd.form == "rescue_therapy" and isinstance(data.get("therapy"), str):
        therapy = data["therapy"]
        if therapy in _DRUG_THERAPIES:
            _medication(b, key, therapy.replace("_", " "), day, None)
        else:
            body = {
                "status": "completed",
                "code": _local(therapy, therapy.replace("_", " ")),
                **b.subject_field(),
            }
            if day:
                body["performedDateTime" if b.version == "R4B" else "occurrenceDateTime"] = day
            b.add("Procedure", key, body)
    if fd.form == "adverse_event":
        _adverse_event(b, key, data)


def _adverse_event(b: _Builder, key: str, data: Mapping[str, Any]) -> None:
    term = data.get("term")
    event = {"text": str(term)} if term else _local("adverse_event", "Adverse event")
    body: dict[str, Any] = {"actuality": "actual", **b.subject_field()}
    if data.get("serious") is not None:
        serious = data["serious"] == 1
        body["seriousness"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                    "code": "serious" if serious else "non-serious",
                }
            ]
        }
    if b.version == "R4B":
        body["event"] = event
        if data.get("onset_date"):
            body["date"] = data["onset_date"]
    else:
        body["status"] = "completed" if data.get("resolved_date") else "in-progress"
        body["code"] = event
        if data.get("onset_date"):
            body["occurrenceDateTime"] = data["onset_date"]
    if isinstance(data.get("outcome"), str):
        outcome = _local(str(data["outcome"]), str(data["outcome"]).replace("_", " "))
        body["outcome"] = outcome if b.version == "R4B" else [outcome]
    b.add("AdverseEvent", key, body)


def write_bundles(
    protocol: Protocol,
    subjects: Iterable[SubjectData],
    folder: str | Path,
    *,
    version: FhirVersion = "R4B",
    identities: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write one validated Bundle JSON per subject into ``folder``; return the paths.

    ``identities`` (study id → decrypted identifiers) is only for an administrator's identified
    export; the caller checks the role and audits the disclosure (see :mod:`ductal.exchange.api`).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for subject in subjects:
        identity = identities.get(subject.study_id) if identities else None
        bundle = subject_bundle(protocol, subject, version=version, identity=identity)
        problems = validate_bundle(bundle, version)
        if problems:
            raise ValidationError(
                f"FHIR {version} Bundle of {subject.study_id} is not valid",
                problems=[Problem(subject.study_id, p) for p in problems],
            )
        path = out / f"{subject.study_id}.json"
        path.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
        paths.append(path)
        if progress is not None:
            progress(1)
    return paths
