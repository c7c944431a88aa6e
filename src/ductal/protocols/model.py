"""The protocol model: a versioned study definition held as data (YAML on disk, pydantic in memory).

Everything a study needs to run is here — arms, strata, eligibility, the schedule of events, the
forms and their fields, response criteria and endpoint definitions — so that a new study is a new
YAML file, not new code. Expressions (branching, rules, eligibility) are strings in the rule
language of :mod:`ductal.protocols.logic`; they are parsed, never evaluated as Python.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KEY_PATTERN = r"^[a-z][a-z0-9_]*$"

FieldType = Literal[
    "text",
    "integer",
    "number",
    "date",
    "datetime",
    "choice",
    "multi_choice",
    "yes_no",
    "calc",
    "file",
]
Language = Literal["en", "zh"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    """A label in English with an optional Simplified Chinese translation."""

    en: str
    zh: str | None = None

    def get(self, lang: str = "en") -> str:
        """Return the text in ``lang``, falling back to English."""
        if lang.startswith("zh") and self.zh:
            return self.zh
        return self.en


class Choice(_Strict):
    code: str
    label: Text


class FieldDef(_Strict):
    """One question on a form."""

    key: str = Field(pattern=KEY_PATTERN)
    type: FieldType
    label: Text
    help: Text | None = None
    unit: str | None = None
    choices: list[Choice] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    decimals: int | None = Field(default=None, ge=0, le=10)
    max_length: int | None = Field(default=None, ge=1)
    required: bool = False
    identifier: bool = False
    show_if: str | None = None
    calc: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FieldDef:
        if self.type in ("choice", "multi_choice") and not self.choices:
            raise ValueError(f"field {self.key!r} of type {self.type} needs choices")
        if self.type not in ("choice", "multi_choice") and self.choices:
            raise ValueError(f"field {self.key!r} of type {self.type} cannot have choices")
        codes = [c.code for c in self.choices]
        if len(codes) != len(set(codes)):
            raise ValueError(f"field {self.key!r} has duplicate choice codes")
        if self.type == "calc" and not self.calc:
            raise ValueError(f"calc field {self.key!r} needs a calc expression")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"field {self.key!r}: min {self.min} is above max {self.max}")
        return self

    def choice_label(self, code: str, lang: str = "en") -> str:
        """Return the label of choice ``code`` (the code itself when unknown)."""
        for choice in self.choices:
            if choice.code == code:
                return choice.label.get(lang)
        return code


class Rule(_Strict):
    """A cross-field check: ``expr`` must hold, else ``message`` is reported on ``fields``."""

    key: str = Field(pattern=KEY_PATTERN)
    expr: str
    message: Text
    fields: list[str] = Field(min_length=1)
    when: str | None = None


class FormDef(_Strict):
    key: str = Field(pattern=KEY_PATTERN)
    title: Text
    description: Text | None = None
    repeating: bool = False
    fields: list[FieldDef]
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_fields(self) -> FormDef:
        keys = [f.key for f in self.fields]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"form {self.key!r} repeats field keys: {', '.join(dupes)}")
        return self

    def field(self, key: str) -> FieldDef:
        """Return the field ``key``; ``KeyError`` when the form has none."""
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(key)


class Arm(_Strict):
    key: str = Field(pattern=KEY_PATTERN)
    label: Text
    ratio: int = Field(default=1, ge=1)
    description: Text | None = None


class Stratum(_Strict):
    """A stratification factor taken from a screening or baseline field."""

    key: str = Field(pattern=KEY_PATTERN)
    form: str
    field: str
    levels: list[str] = Field(min_length=1)


class Randomisation(_Strict):
    method: Literal["none", "permuted_blocks", "minimisation"] = "none"
    block_sizes: list[int] = Field(default_factory=lambda: [4, 6])
    minimisation_probability: float = Field(default=0.8, gt=0.5, le=1.0)
    blinded: bool = False


class EligibilityRule(_Strict):
    """A criterion on the screening form: the subject is eligible only if ``expr`` holds."""

    key: str = Field(pattern=KEY_PATTERN)
    kind: Literal["inclusion", "exclusion"] = "inclusion"
    expr: str
    message: Text


class Repeat(_Strict):
    """A repeating block of sessions, e.g. lavage every other day for two weeks."""

    every_days: int = Field(ge=1)
    count: int = Field(ge=1)


class ScheduledEvent(_Strict):
    """A visit in the schedule of events, ``day`` days after its anchor."""

    key: str = Field(pattern=KEY_PATTERN)
    label: Text
    anchor: Literal["enrolment", "first_session"] = "enrolment"
    day: int = 0
    window_before: int = Field(default=0, ge=0)
    window_after: int = Field(default=0, ge=0)
    forms: list[str] = Field(min_length=1)
    repeat: Repeat | None = None
    arms: list[str] = Field(default_factory=list)  # empty: every arm
    kind: Literal["screening", "baseline", "treatment", "follow_up", "unscheduled", "end"] = (
        "follow_up"
    )


class ResponseCriteria(_Strict):
    """How CR / PR / SD / PD are derived from an assessment (see :mod:`ductal.outcomes`)."""

    form: str = "follow_up"
    measure: Literal["sum", "largest"] = "largest"
    size_fields: list[str] = Field(
        default_factory=lambda: ["us_size_1_mm", "us_size_2_mm", "us_size_3_mm"]
    )
    clinical_sign_fields: list[str] = Field(
        default_factory=lambda: [
            "mass",
            "erythema",
            "abscess",
            "fistula",
            "ulcer",
            "skin_involvement",
        ]
    )
    new_lesion_fields: list[str] = Field(default_factory=lambda: ["new_abscess", "new_fistula"])
    escalation_field: str | None = "treatment_escalated"
    investigator_field: str = "investigator_response"
    partial_reduction: float = Field(default=0.5, gt=0, lt=1)
    progression_growth: float = Field(default=0.2, gt=0)
    scar_only_counts_as_complete: bool = True
    # Additions read by ductal.outcomes (defaults match the built-in protocols).
    baseline_form: str = "baseline"
    scar_field: str | None = "scar_only"
    ultrasound_done_field: str | None = "us_done"
    relapse_field: str | None = "relapse"
    growth_reference: Literal["baseline", "nadir"] = "baseline"


class Endpoint(_Strict):
    """An endpoint definition read by :mod:`ductal.outcomes` to build the analysis dataset."""

    key: str = Field(pattern=KEY_PATTERN)
    label: Text
    kind: Literal["time_to_event", "binary", "competing_risks", "count"]
    primary: bool = False
    event: str
    competing: list[str] = Field(default_factory=list)
    horizon_days: int | None = Field(default=None, ge=1)
    population: Literal["itt", "per_protocol", "all_enrolled"] = "itt"
    non_inferiority_margin: float | None = None


class Benchmark(_Strict):
    """A literature figure the efficacy report compares against."""

    key: str = Field(pattern=KEY_PATTERN)
    label: Text
    measure: Literal["cr_rate", "time_to_cr_months", "recurrence_rate", "complication_rate"]
    low: float
    high: float | None = None
    source: str


class ProcedureRule(_Strict):
    """A procedure rule (see :mod:`ductal.procedure`): raised when ``when`` holds on a record.

    ``level`` says what follows: ``block`` stops a session being recorded as started (unless an
    investigator overrides it), ``query`` raises a data query on ``field``, ``warn``, ``advice``
    and ``info`` are shown. ``message`` may name values in braces, e.g. ``{steroid_dose_max_mg}``.
    """

    key: str = Field(pattern=KEY_PATTERN)
    level: Literal["block", "query", "warn", "advice", "info"]
    forms: list[str] = Field(min_length=1)
    when: str
    message: Text
    field: str | None = None


class ProcedureStep(_Strict):
    """One step of the procedure checklist: the form field holding the time it was done."""

    field: str
    required: bool = False


class DoseRange(_Strict):
    min: float = Field(ge=0)
    max: float = Field(ge=0)


class CourseStep(_Strict):
    """One visit of a lavage cycle: ``code`` of the course field, ``day`` within the cycle."""

    code: str
    day: int = Field(ge=0)
    window_before: int = Field(default=0, ge=0)
    window_after: int = Field(default=0, ge=0)


class LavageCourse(_Strict):
    """The course pattern: cycles of the repeating treatment event ``event``, each of ``steps``."""

    event: str
    form: str
    field: str
    date_field: str
    steps: list[CourseStep] = Field(min_length=1)


class PathologySettings(_Strict):
    event: str = "pathology_result"
    form: str = "pathology_result"
    due_days: int = Field(default=7, ge=1)
    flag_results: list[str] = Field(default_factory=lambda: ["suspicious", "malignant"])


class ProcedureSettings(_Strict):
    """The procedure rules of a protocol, held in ``settings.procedure``."""

    checks_form: str = "pre_session_checks"
    record_form: str = "ductoscopy_procedure"
    checks: list[ProcedureRule] = Field(default_factory=list)
    rules: list[ProcedureRule] = Field(default_factory=list)
    steps: list[ProcedureStep] = Field(default_factory=list)
    steroid_dose_mg: dict[str, DoseRange] = Field(default_factory=dict)
    course: LavageCourse | None = None
    pathology: PathologySettings = Field(default_factory=PathologySettings)


class Protocol(_Strict):
    """A complete, versioned study definition."""

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: str
    title: Text
    description: Text | None = None
    design: Literal["single_arm", "randomised", "adaptive"]
    registration: str | None = None
    sponsor: str | None = None
    study_id_prefix: str = Field(default="SUB", pattern=r"^[A-Z]{2,6}$")
    target_enrolment: int = Field(ge=1)
    follow_up_days: int = Field(ge=1)
    arms: list[Arm] = Field(min_length=1)
    strata: list[Stratum] = Field(default_factory=list)
    randomisation: Randomisation = Field(default_factory=Randomisation)
    screening_form: str
    eligibility: list[EligibilityRule] = Field(default_factory=list)
    schedule: list[ScheduledEvent] = Field(min_length=1)
    forms: list[FormDef] = Field(min_length=1)
    response: ResponseCriteria = Field(default_factory=ResponseCriteria)
    endpoints: list[Endpoint] = Field(default_factory=list)
    benchmarks: list[Benchmark] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)

    def form(self, key: str) -> FormDef:
        """Return the form ``key``; ``KeyError`` when the protocol has none."""
        for f in self.forms:
            if f.key == key:
                return f
        raise KeyError(key)

    def event(self, key: str) -> ScheduledEvent:
        """Return the scheduled event ``key``; ``KeyError`` when the protocol has none."""
        for e in self.schedule:
            if e.key == key:
                return e
        raise KeyError(key)

    def arm(self, key: str) -> Arm:
        for a in self.arms:
            if a.key == key:
                return a
        raise KeyError(key)

    @property
    def is_randomised(self) -> bool:
        return self.design in ("randomised", "adaptive") and len(self.arms) > 1

    def canonical_json(self) -> str:
        """Return the definition as canonical JSON (sorted keys), the input of :meth:`sha256`."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        """Return the SHA-256 of the canonical definition; stored beside each protocol version."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
