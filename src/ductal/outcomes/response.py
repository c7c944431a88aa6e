"""Response classification: CR / PR / SD / PD of one follow-up assessment, by the protocol's rules.

Three calls are made and kept apart:

* **clinical** — from the clinical signs alone: CR when no sign remains (a scar alone counts as no
  sign when the protocol says so), PD on a new abscess or fistula or an escalation of treatment,
  PR when fewer signs remain than at baseline, SD otherwise;
* **radiological** — from the ultrasound lesion size (the largest of the three diameters, or their
  sum, as the protocol says) against baseline: CR when no lesion remains (or scar only), PD on
  growth of at least ``progression_growth`` over the reference (baseline, or the smallest size so
  far), PR on a reduction of at least ``partial_reduction``, SD otherwise; NE (not evaluable) when
  either size is missing;
* **overall** — the protocol's rule, which names the rule that fired (``Classification.rule``):

  1. ``pd_new_lesion``: a new abscess or fistula;
  2. ``pd_escalation``: treatment escalated (surgery, systemic therapy, …);
  3. ``pd_growth``: the lesion grew by at least the progression threshold;
  4. ``cr`` / ``cr_scar_only``: no clinical sign and no residual lesion (or scar only);
     ``cr_no_ultrasound`` when the signs are gone but no ultrasound was done;
  5. ``pr_reduction``: the lesion shrank by at least the partial-response threshold;
  6. ``sd`` otherwise (``sd_not_measurable`` when signs remain and no size can be compared).

Everything here is pure: it reads dictionaries of form data and returns values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ductal.protocols.model import ResponseCriteria

Response = Literal["CR", "PR", "SD", "PD"]
RadiologicalResponse = Literal["CR", "PR", "SD", "PD", "NE"]
RESPONSES: tuple[str, ...] = ("CR", "PR", "SD", "PD")

# Baseline "presentation" codes and the follow-up signs each stands for.
_PRESENTATION_SIGNS: dict[str, tuple[str, ...]] = {
    "mass": ("mass",),
    "abscess": ("abscess",),
    "fistula": ("fistula",),
    "skin": ("erythema", "ulcer", "skin_involvement"),
}


@dataclass(frozen=True)
class Classification:
    """The derived response of one assessment and why."""

    overall: Response
    rule: str
    clinical: Response
    radiological: RadiologicalResponse
    signs: int
    size_mm: float
    change: float  # relative change from baseline (NaN when not measurable)


def _yes(value: Any) -> bool:
    return value in (1, True, "1", "yes")


def lesion_size(data: Mapping[str, Any], criteria: ResponseCriteria) -> float:
    """Return the lesion size of one assessment by the protocol's measure (NaN if not measured).

    An assessment whose ultrasound is recorded as not done, or whose diameters are all blank, has
    no size; blank diameters beside recorded ones are ignored.
    """
    done = criteria.ultrasound_done_field
    if done is not None and done in data and not _yes(data.get(done)):
        return math.nan
    values = [data.get(k) for k in criteria.size_fields]
    sizes = [float(x) for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
    sizes = [x for x in sizes if math.isfinite(x)]
    if not sizes:
        return math.nan
    return max(sizes) if criteria.measure == "largest" else sum(sizes)


def baseline_signs(data: Mapping[str, Any], criteria: ResponseCriteria) -> int:
    """Return how many of the protocol's clinical signs were present at baseline.

    The baseline form may record the signs field by field (like a follow-up) or as the
    ``presentation`` multiple choice; both are read.
    """
    fields = criteria.clinical_sign_fields
    direct = [k for k in fields if k in data]
    if direct:
        return sum(_yes(data.get(k)) for k in direct)
    presented = data.get("presentation") or []
    count = 0
    for code in presented if isinstance(presented, list) else []:
        count += sum(1 for sign in _PRESENTATION_SIGNS.get(str(code), ()) if sign in fields)
    return count


def _radiological(
    size: float, reference: float, baseline: float, scar: bool, criteria: ResponseCriteria
) -> tuple[RadiologicalResponse, float]:
    if math.isnan(size):
        return ("CR" if scar else "NE"), math.nan
    if size == 0:
        change = -1.0 if baseline > 0 else math.nan
        return "CR", change
    if math.isnan(baseline) or baseline <= 0:
        return "NE", math.nan
    change = size / baseline - 1
    ref = reference if not math.isnan(reference) else baseline
    if ref > 0 and size >= ref * (1 + criteria.progression_growth) - 1e-9:
        return "PD", change
    if ref == 0 and size > 0:
        return "PD", change  # a lesion back where none was left
    if scar:
        return "CR", change  # what remains is scar or residual induration only
    if change <= -criteria.partial_reduction + 1e-9:
        return "PR", change
    return "SD", change


def classify(
    data: Mapping[str, Any],
    *,
    criteria: ResponseCriteria,
    baseline_size: float,
    baseline_sign_count: int,
    nadir_size: float = math.nan,
) -> Classification:
    """Return the clinical, radiological and overall response of one assessment.

    ``baseline_size`` is the baseline lesion size by the protocol's measure (NaN when unknown);
    ``nadir_size`` the smallest size before this assessment, used when the protocol measures
    growth from the nadir.
    """
    signs = sum(_yes(data.get(k)) for k in criteria.clinical_sign_fields)
    new_lesion = any(_yes(data.get(k)) for k in criteria.new_lesion_fields)
    escalated = criteria.escalation_field is not None and _yes(data.get(criteria.escalation_field))
    scar = (
        criteria.scar_only_counts_as_complete
        and criteria.scar_field is not None
        and _yes(data.get(criteria.scar_field))
    )
    size = lesion_size(data, criteria)
    reference = baseline_size
    if criteria.growth_reference == "nadir" and not math.isnan(nadir_size):
        reference = min(nadir_size, baseline_size) if not math.isnan(baseline_size) else nadir_size
    radiological, change = _radiological(size, reference, baseline_size, scar, criteria)

    if new_lesion or escalated:
        clinical: Response = "PD"
    elif signs == 0:
        clinical = "CR"
    elif signs < baseline_sign_count:
        clinical = "PR"
    else:
        clinical = "SD"

    overall: Response
    if new_lesion:
        overall, rule = "PD", "pd_new_lesion"
    elif escalated:
        overall, rule = "PD", "pd_escalation"
    elif radiological == "PD":
        overall, rule = "PD", "pd_growth"
    elif signs == 0 and radiological == "CR":
        overall, rule = "CR", ("cr_scar_only" if scar and size != 0 else "cr")
    elif signs == 0 and radiological == "NE" and math.isnan(size):
        overall, rule = "CR", "cr_no_ultrasound"
    elif radiological in ("PR", "CR"):
        # a lesion gone on ultrasound with signs remaining is at best partial
        overall, rule = "PR", "pr_reduction"
    elif radiological == "NE" and signs > 0:
        overall, rule = "SD", "sd_not_measurable"
    else:
        overall, rule = "SD", "sd"
    return Classification(
        overall=overall,
        rule=rule,
        clinical=clinical,
        radiological=radiological,
        signs=signs,
        size_mm=size,
        change=change,
    )


def classify_series(
    assessments: Sequence[Mapping[str, Any]],
    *,
    criteria: ResponseCriteria,
    baseline: Mapping[str, Any] | None,
) -> list[Classification]:
    """Classify one subject's assessments, given in date order, against her baseline."""
    base = baseline or {}
    baseline_size = lesion_size(base, criteria) if base else math.nan
    sign_count = baseline_signs(base, criteria) if base else len(criteria.clinical_sign_fields)
    nadir = math.nan
    out: list[Classification] = []
    for data in assessments:
        result = classify(
            data,
            criteria=criteria,
            baseline_size=baseline_size,
            baseline_sign_count=sign_count,
            nadir_size=nadir,
        )
        out.append(result)
        if not math.isnan(result.size_mm):
            nadir = result.size_mm if math.isnan(nadir) else min(nadir, result.size_mm)
    return out


def investigator_call(data: Mapping[str, Any], criteria: ResponseCriteria) -> str | None:
    """Return the investigator's own call in upper case (CR, PR, SD, PD) or None when blank."""
    value = data.get(criteria.investigator_field)
    if value is None or value == "":
        return None
    return str(value).upper()


def disagreement_text(derived: Classification, investigator: str) -> str:
    """Return the text of the data query raised when the investigator's call differs."""
    return (
        f"Investigator's response {investigator} differs from the response derived by the "
        f"protocol's rules: {derived.overall} (rule {derived.rule}; clinical {derived.clinical}, "
        f"radiological {derived.radiological}). Please check the assessment or the call."
    )


def best_response(calls: Iterable[str]) -> str | None:
    """Return the best of a sequence of responses (CR > PR > SD > PD), None when empty."""
    rank = {r: i for i, r in enumerate(RESPONSES)}
    present = [c for c in calls if c in rank]
    return min(present, key=rank.__getitem__) if present else None
