"""Adaptive multi-arm designs as data: the YAML schema, its checks and the shipped designs.

A design names its arms (with optional Beta priors and allocation ratios), the looks (the
cumulative number of patients with an outcome at each analysis, the last one final), the
allocation (fixed ratio or response-adaptive), the rules (drop for inadequate response or
inferiority, stop for superiority, efficacy and non-inferiority criteria) and the scenarios of
true response rates to simulate. Every problem is reported with its path, e.g.
``scenarios[1].rates.C``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ductal.errors import NotFound, Problem, ValidationError

BUILTIN_PREFIX = "builtin:"
ARM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prior(_Strict):
    """A Beta(a, b) prior on an arm's response rate."""

    a: float = Field(1.0, gt=0, description="First shape parameter (prior responders).")
    b: float = Field(1.0, gt=0, description="Second shape parameter (prior non-responders).")


class Arm(_Strict):
    id: str = Field(pattern=ARM_PATTERN)
    label: str | None = None
    control: bool = False
    ratio: float = Field(1.0, gt=0, description="Allocation weight under fixed allocation.")
    prior: Prior | None = None


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    rates: dict[str, float]
    null_hypothesis: bool | None = Field(
        None,
        description="Counts towards type I error; default: all rates equal (two or more arms, "
        "no non-inferiority rule).",
    )


class Allocation(_Strict):
    type: Literal["fixed", "response-adaptive"] = "fixed"
    softening: float = Field(1.0, ge=0, le=1, description="Power applied to P(best).")
    min_probability: float = Field(0.0, ge=0, lt=1)
    max_probability: float = Field(1.0, gt=0, le=1)
    randomisation: Literal["balanced", "simple"] = Field(
        "balanced",
        description="balanced: counts between looks follow the probabilities as closely as "
        "whole patients allow; simple: multinomial draws.",
    )


class ThresholdRule(_Strict):
    threshold: float = Field(gt=0, lt=1)
    bound: float = Field(gt=0, lt=1)


class BoundRule(_Strict):
    bound: float = Field(gt=0, lt=1)


class SuperiorityRule(_Strict):
    bound: float = Field(gt=0, lt=1, description="Stop when an arm's P(best) reaches this.")
    final_bound: float | None = Field(
        None, gt=0, lt=1, description="Bound at the final look (default: bound)."
    )


class KeepBestRule(_Strict):
    arms: int = Field(ge=1, description="Non-control arms kept at each interim look.")


class NonInferiorityRule(_Strict):
    arm: str
    reference: str
    margin: float = Field(gt=0, lt=1)
    bound: float = Field(gt=0, lt=1, description="Needed P(p_arm - p_reference > -margin).")


class Rules(_Strict):
    inadequate_response: ThresholdRule | None = Field(
        None, description="Drop an arm when P(rate > threshold) < bound."
    )
    inferiority: BoundRule | None = Field(None, description="Drop an arm when P(best) < bound.")
    superiority: SuperiorityRule | None = None
    efficacy: ThresholdRule | None = Field(
        None, description="At its end, an arm is efficacious when P(rate > threshold) >= bound."
    )
    keep_best: KeepBestRule | None = Field(
        None,
        description="At interim looks keep only this many non-control arms, those with the "
        "highest posterior mean (ties at random); as rpact's 'best'/'rBest' selection.",
    )
    noninferiority: NonInferiorityRule | None = None
    stop_when_one_arm_left: bool = True


class AdaptiveDesign(_Strict):
    """One adaptive design, as read from YAML."""

    name: str = Field(min_length=1)
    description: str | None = None
    arms: list[Arm] = Field(min_length=1)
    looks: list[int] = Field(min_length=1)
    prior: Prior = Prior()
    allocation: Allocation = Allocation()
    rules: Rules = Rules()
    scenarios: list[Scenario] = Field(min_length=1)

    @property
    def arm_ids(self) -> list[str]:
        """Return the arm ids in order."""
        return [arm.id for arm in self.arms]

    def prior_of(self, arm: Arm) -> Prior:
        """Return the arm's own prior, or the design's default."""
        return arm.prior or self.prior

    def is_null(self, scenario: Scenario) -> bool:
        """Return whether the scenario counts towards the type I error."""
        if scenario.null_hypothesis is not None:
            return scenario.null_hypothesis
        if len(self.arms) < 2 or self.rules.noninferiority is not None:
            return False  # the null of these designs is a rate or a margin, so it must be flagged
        return len({scenario.rates[a] for a in self.arm_ids}) == 1


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "design"


def _semantic_problems(d: AdaptiveDesign) -> list[Problem]:
    problems: list[Problem] = []
    ids = d.arm_ids
    seen: set[str] = set()
    for i, arm_id in enumerate(ids):
        if arm_id in seen:
            problems.append(Problem(f"arms[{i}].id", f"duplicate arm id {arm_id!r}"))
        seen.add(arm_id)
    for i, look in enumerate(d.looks):
        if look < 1:
            problems.append(Problem(f"looks[{i}]", f"must be at least 1, got {look}"))
        elif i > 0 and look <= d.looks[i - 1]:
            problems.append(
                Problem(f"looks[{i}]", f"looks must increase: {look} follows {d.looks[i - 1]}")
            )
    for s, scenario in enumerate(d.scenarios):
        for arm_id in ids:
            if arm_id not in scenario.rates:
                problems.append(Problem(f"scenarios[{s}].rates.{arm_id}", "no rate for this arm"))
        for arm_id, rate in scenario.rates.items():
            if arm_id not in seen:
                problems.append(Problem(f"scenarios[{s}].rates.{arm_id}", "no such arm"))
            elif not 0.0 <= rate <= 1.0:
                problems.append(
                    Problem(f"scenarios[{s}].rates.{arm_id}", f"must be in [0, 1], got {rate}")
                )
    names = [sc.name for sc in d.scenarios]
    for s, name in enumerate(names):
        if names.index(name) != s:
            problems.append(Problem(f"scenarios[{s}].name", f"duplicate scenario {name!r}"))
    k = len(ids)
    alloc = d.allocation
    if alloc.min_probability > alloc.max_probability:
        problems.append(Problem("allocation.min_probability", "must not exceed max_probability"))
    if alloc.min_probability * k > 1:
        problems.append(
            Problem(
                "allocation.min_probability", f"{k} arms cannot each get {alloc.min_probability}"
            )
        )
    if alloc.max_probability * k < 1:
        problems.append(
            Problem("allocation.max_probability", f"{k} arms cannot share 1 with this maximum")
        )
    rules = d.rules
    if k == 1:
        for name in ("inferiority", "superiority", "noninferiority", "keep_best"):
            if getattr(rules, name) is not None:
                problems.append(Problem(f"rules.{name}", "needs at least two arms"))
        if rules.efficacy is None:
            problems.append(Problem("rules.efficacy", "a single-arm design needs an efficacy rule"))
        if alloc.type == "response-adaptive":
            problems.append(Problem("allocation.type", "needs at least two arms"))
    ni = rules.noninferiority
    if ni is not None:
        for field in ("arm", "reference"):
            if getattr(ni, field) not in seen:
                problems.append(
                    Problem(f"rules.noninferiority.{field}", f"no arm {getattr(ni, field)!r}")
                )
        if ni.arm == ni.reference:
            problems.append(Problem("rules.noninferiority.reference", "must differ from arm"))
    return problems


def parse_design(data: Any, *, source: str = "design") -> AdaptiveDesign:
    """Return the validated design; a ValidationError lists every problem with its path."""
    if not isinstance(data, dict):
        raise ValidationError(
            f"invalid design {source}", problems=[Problem("design", "must be a mapping")]
        )
    try:
        design = AdaptiveDesign.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [Problem(_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        raise ValidationError(f"invalid design {source}", problems=problems) from None
    problems = _semantic_problems(design)
    if problems:
        raise ValidationError(f"invalid design {source}", problems=problems)
    return design


def builtin_names() -> list[str]:
    """Return the names of the shipped designs."""
    folder = resources.files("ductal.design") / "builtin"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_design(ref: str | Path) -> AdaptiveDesign:
    """Return the design at a path, or a shipped one named ``builtin:NAME``."""
    ref = str(ref)
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX) :]
        if name not in builtin_names():
            raise NotFound(f"no built-in design {name!r}; available: {', '.join(builtin_names())}")
        text = (resources.files("ductal.design") / "builtin" / f"{name}.yaml").read_text()
    else:
        path = Path(ref)
        if not path.is_file():
            raise NotFound(f"design file not found: {ref}")
        text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(
            f"invalid design {ref}", problems=[Problem("design", f"not valid YAML: {exc}")]
        ) from None
    return parse_design(data, source=ref)
