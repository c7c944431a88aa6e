"""Procedure rules read from the protocol (``settings.procedure``) and evaluated on form data.

The rules themselves are data in the protocol, written in the rule language of
:mod:`ductal.protocols.logic`; this module only finds them, fills in the values they may use and
turns the ones that hold into :class:`Finding` objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from ductal.errors import Problem, ProtocolError
from ductal.protocols.logic import is_blank, parse
from ductal.protocols.model import FormDef, ProcedureRule, ProcedureSettings, Protocol

LEVELS = ("block", "query", "warn", "advice", "info")


@dataclass(frozen=True)
class Finding:
    """A procedure rule that holds for a record: what to show, and how strongly."""

    key: str
    level: str
    message: str
    field: str | None = None

    @property
    def blocking(self) -> bool:
        return self.level == "block"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "level": self.level, "message": self.message, "field": self.field}


def procedure_settings(protocol: Protocol) -> ProcedureSettings:
    """Return the protocol's procedure rules; ProtocolError when it has none or they are bad."""
    raw = protocol.settings.get("procedure")
    if raw is None:
        raise ProtocolError(f"protocol {protocol.id} defines no procedure (settings.procedure)")
    try:
        return ProcedureSettings.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = [
            Problem("settings.procedure." + ".".join(str(p) for p in e["loc"]), e["msg"])
            for e in exc.errors()
        ]
        raise ProtocolError(
            f"protocol {protocol.id}: settings.procedure is malformed", problems=problems
        ) from None


def max_minutes(protocol: Protocol) -> float | None:
    """Return the protocol's advised longest procedure in minutes (``procedure_max_minutes``)."""
    value = protocol.settings.get("procedure_max_minutes")
    return float(value) if isinstance(value, int | float) else None


def _shown(value: Any) -> str:
    if is_blank(value):
        return "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def render_message(template: str, env: Mapping[str, Any]) -> str:
    """Return ``template`` with each ``{name}`` replaced by its value (unknown names stay)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return _shown(env.get(name)) if name in env else match.group(0)

    return _PLACEHOLDER.sub(value, template)


def display_env(form: FormDef, env: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """Return ``env`` with the form's coded answers replaced by their labels in ``lang``."""
    out = dict(env)
    for field in form.fields:
        value = env.get(field.key)
        if is_blank(value):
            continue
        if field.type == "choice":
            out[field.key] = field.choice_label(str(value), lang)
        elif field.type == "multi_choice" and isinstance(value, list):
            out[field.key] = [field.choice_label(str(v), lang) for v in value]
    return out


def evaluate(
    rules: Iterable[ProcedureRule],
    *,
    form_key: str,
    env: Mapping[str, Any],
    lang: str = "en",
    form: FormDef | None = None,
) -> list[Finding]:
    """Return a finding for every rule of ``form_key`` whose condition holds on ``env``.

    With ``form``, coded answers named in a message are shown by their labels in ``lang``.
    """
    shown = display_env(form, env, lang) if form is not None else env
    found: list[Finding] = []
    for rule in rules:
        if form_key not in rule.forms:
            continue
        if parse(rule.when).holds(env):
            message = render_message(rule.message.get(lang), shown)
            found.append(Finding(rule.key, rule.level, message, rule.field))
    found.sort(key=lambda f: LEVELS.index(f.level))
    return found


def check_definitions(protocol: Protocol) -> list[Problem]:
    """Return problems with the procedure rules: bad expressions, unknown forms or fields."""
    settings = procedure_settings(protocol)
    problems: list[Problem] = []
    forms = {f.key: f for f in protocol.forms}
    for group, rules in (("checks", settings.checks), ("rules", settings.rules)):
        for index, rule in enumerate(rules):
            path = f"settings.procedure.{group}[{index}]"
            try:
                parse(rule.when)
            except ProtocolError as exc:
                problems.append(Problem(f"{path}.when", exc.message))
            for form_key in rule.forms:
                if form_key not in forms:
                    problems.append(Problem(f"{path}.forms", f"no form {form_key!r}"))
            if rule.level == "query" and rule.field is None:
                problems.append(Problem(f"{path}.field", "a query rule needs a field"))
    record = forms.get(settings.record_form)
    if record is None:
        problems.append(Problem("settings.procedure.record_form", "no such form"))
    else:
        keys = {f.key for f in record.fields}
        for index, step in enumerate(settings.steps):
            if step.field not in keys:
                problems.append(
                    Problem(f"settings.procedure.steps[{index}].field", f"no field {step.field!r}")
                )
    if settings.checks_form not in forms:
        problems.append(Problem("settings.procedure.checks_form", "no such form"))
    return problems
