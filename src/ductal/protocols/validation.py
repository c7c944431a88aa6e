"""Validate form data against its form definition, and screening data against eligibility.

:func:`validate_form_data` turns what a user (or an import) submitted into the JSON stored for a
form record and reports every problem at once, each on its field. The storage types are:

=============  =====================================================
field type     stored as
=============  =====================================================
text           ``str`` (trimmed)
integer        ``int``
number         ``float``, rounded to ``decimals`` when set
date           ``'YYYY-MM-DD'``
datetime       ISO 8601 in UTC ending in ``Z`` (``2024-05-01T09:30:00Z``)
choice         ``str`` code
multi_choice   sorted ``list`` of codes
yes_no         ``1`` or ``0``
calc           computed from its expression (a submitted value is ignored)
file           ``str`` reference such as ``sha256:…``
=============  =====================================================

Blank answers (``None``, ``''``, ``[]``) are left out of the cleaned data, as are values of fields
hidden by their ``show_if``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from ductal.errors import Problem, ProtocolError
from ductal.protocols.logic import is_blank, parse, truthy
from ductal.protocols.model import FieldDef, FormDef, Protocol

__all__ = [
    "EligibilityResult",
    "coerce_value",
    "eligibility",
    "validate_form_data",
    "visible_fields",
]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_YES = {"1", "yes", "y", "true"}
_NO = {"0", "no", "n", "false"}
_FUTURE_OK_SUFFIXES = ("_due", "_planned")


class _Invalid(Exception):
    """A value could not be coerced; the message is the problem text."""


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _coerce_integer(value: Any) -> int:
    message = "must be a whole number"
    if isinstance(value, bool):
        raise _Invalid(message)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Invalid(message)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.match(text) and len(text) < 30:
            return int(text)
        try:
            number = float(text)
        except ValueError:
            raise _Invalid(message) from None
        if math.isfinite(number) and number.is_integer() and abs(number) < 1e15:
            return int(number)
    raise _Invalid(message)


def _coerce_number(value: Any, decimals: int | None) -> float:
    message = "must be a number"
    if isinstance(value, bool):
        raise _Invalid(message)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise _Invalid(message) from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Invalid(message) from None
    else:
        raise _Invalid(message)
    if not math.isfinite(number):
        raise _Invalid(message)
    return round(number, decimals) if decimals is not None else number


def _coerce_date(value: Any) -> date:
    message = "must be a date (YYYY-MM-DD)"
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid("is not a real date") from None
    raise _Invalid(message)


def _coerce_datetime(value: Any) -> datetime:
    message = "must be a date and time (ISO 8601, e.g. 2024-05-01T09:30:00Z)"
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 16 or text[10] not in "T ":
            raise _Invalid(message)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _Invalid(message) from None
    else:
        raise _Invalid(message)
    # a time without a zone is taken to be UTC already, as everything stored is
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment


def _utc_text(moment: datetime) -> str:
    # isoformat, not strftime: strftime drops the leading zeros of years before 1000
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _codes_text(definition: FieldDef) -> str:
    return ", ".join(c.code for c in definition.choices)


def _coerce_code(value: Any, definition: FieldDef) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid(f"must be one of: {_codes_text(definition)}")
    code = str(value).strip()
    if code not in {c.code for c in definition.choices}:
        raise _Invalid(f"{code!r} is not one of: {_codes_text(definition)}")
    return code


def _coerce_codes(value: Any, definition: FieldDef) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    elif isinstance(value, Mapping):  # {"abscess": 1, "mass": 0}, as a checkbox grid submits
        items = [code for code, ticked in value.items() if truthy(ticked)]
    else:
        raise _Invalid(f"must be a list of: {_codes_text(definition)}")
    codes = {_coerce_code(item, definition) for item in items}
    return sorted(codes)


def _coerce_yes_no(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _YES:
            return 1
        if text in _NO:
            return 0
    raise _Invalid("must be yes (1) or no (0)")


def coerce_value(definition: FieldDef, value: Any) -> Any:
    """Return ``value`` in the storage type of ``definition``; ValueError says what is wrong.

    Blank values are not handled here: callers drop them first.
    """
    try:
        return _coerce(definition, value)
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def _coerce(definition: FieldDef, value: Any) -> Any:
    kind = definition.type
    if kind == "text":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Invalid("must be text")
        return value.strip() if isinstance(value, str) else _number_text(value)
    if kind == "integer":
        return _coerce_integer(value)
    if kind == "number":
        return _coerce_number(value, definition.decimals)
    if kind == "date":
        return _coerce_date(value).isoformat()
    if kind == "datetime":
        return _utc_text(_coerce_datetime(value))
    if kind == "choice":
        return _coerce_code(value, definition)
    if kind == "multi_choice":
        return _coerce_codes(value, definition)
    if kind == "yes_no":
        return _coerce_yes_no(value)
    if kind == "file":
        if not isinstance(value, str) or not value.strip():
            raise _Invalid("must be a file reference")
        return value.strip()
    raise _Invalid(f"cannot store a value of type {kind}")  # pragma: no cover - calc is computed


def _calc_value(definition: FieldDef, result: Any) -> Any:
    """Return a calc result in storage form (blank stays None)."""
    if is_blank(result):
        return None
    if isinstance(result, bool):
        return int(result)
    if isinstance(result, int | float):
        if not math.isfinite(result):
            return None
        number = float(result)
        return round(number, definition.decimals) if definition.decimals is not None else number
    if isinstance(result, datetime):
        return _utc_text(_coerce_datetime(result))
    if isinstance(result, date):
        return result.isoformat()
    return str(result)


def _environment(
    form: FormDef, values: Mapping[str, Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    env = dict(context)
    env.update({f.key: values.get(f.key) for f in form.fields})  # form fields shadow context
    return env


def visible_fields(
    form: FormDef,
    values: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    today: date | None = None,
) -> set[str]:
    """Return the keys of the fields shown by branching logic given ``values``.

    A field whose ``show_if`` depends on a hidden field sees that field as blank, so hiding
    cascades; the loop runs until nothing changes.
    """
    shown = {f.key for f in form.fields}
    for _ in range(len(form.fields) + 1):
        current = {k: v for k, v in values.items() if k in shown}
        env = _environment(form, current, context or {})
        now = {
            f.key
            for f in form.fields
            if f.show_if is None or parse(f.show_if).holds(env, today=today)
        }
        if now == shown:
            break
        shown = now
    return shown


def _compute_calcs(
    form: FormDef,
    clean: dict[str, Any],
    context: Mapping[str, Any],
    today: date | None,
) -> None:
    calcs = [f for f in form.fields if f.type == "calc" and f.calc]
    # a calc may use another calc further down the form: a few passes settle the chain
    for _ in range(len(calcs) + 1):
        changed = False
        for definition in calcs:
            assert definition.calc is not None
            env = _environment(form, clean, context)
            value = _calc_value(definition, parse(definition.calc).evaluate(env, today=today))
            if clean.get(definition.key) != value:
                changed = True
                if value is None:
                    clean.pop(definition.key, None)
                else:
                    clean[definition.key] = value
        if not changed:
            break


def _range_problem(definition: FieldDef, value: Any) -> str | None:
    if definition.type not in ("integer", "number", "calc") or not isinstance(value, int | float):
        return None
    if isinstance(value, bool):
        return None
    if definition.min is not None and value < definition.min:
        return f"must be at least {_number_text(definition.min)}"
    if definition.max is not None and value > definition.max:
        return f"must be at most {_number_text(definition.max)}"
    return None


def _date_problem(definition: FieldDef, value: Any, birth: date | None, today: date) -> str | None:
    if definition.type not in ("date", "datetime") or not isinstance(value, str):
        return None
    day = date.fromisoformat(value[:10])
    if birth is not None and day < birth:
        return "is before the date of birth"
    if day > today and not definition.key.endswith(_FUTURE_OK_SUFFIXES):
        return "is in the future"
    return None


def _birth_date(context: Mapping[str, Any]) -> date | None:
    value = context.get("date_of_birth")
    if is_blank(value):
        return None
    try:
        return _coerce_date(value)
    except _Invalid:
        return None


def validate_form_data(
    form: FormDef,
    data: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    today: date | None = None,
    lang: str = "en",
) -> tuple[dict[str, Any], list[Problem]]:
    """Return the cleaned data of ``form`` and every problem found, each naming its field.

    ``context`` supplies names expressions may use besides the form's fields (for instance
    ``date_of_birth``, which also bounds every date from below); a form field of the same name
    shadows it. ``today`` (default: the current date) bounds dates from above except for fields
    whose key ends in ``_due`` or ``_planned``. Rule messages are given in ``lang``.
    """
    context = dict(context or {})
    today = today or date.today()
    problems: list[Problem] = []
    failed: set[str] = set()
    known = {f.key for f in form.fields}

    for key in data:
        if key not in known:
            problems.append(Problem(field=str(key), message=f"is not a field of form {form.key!r}"))

    clean: dict[str, Any] = {}
    for definition in form.fields:
        if definition.type == "calc":
            continue
        raw = data.get(definition.key)
        if is_blank(raw) or (isinstance(raw, Mapping) and not raw):
            continue
        try:
            value = _coerce(definition, raw)
        except _Invalid as exc:
            problems.append(Problem(field=definition.key, message=str(exc)))
            failed.add(definition.key)
            continue
        if not is_blank(value):  # e.g. a checkbox grid with nothing ticked
            clean[definition.key] = value

    shown = visible_fields(form, clean, context=context, today=today)
    for key in list(clean):
        if key not in shown:
            del clean[key]  # an answer to a hidden question is dropped, not an error
    _compute_calcs(form, clean, context, today)
    for key in list(clean):
        if key not in shown:
            del clean[key]

    birth = _birth_date(context)
    for definition in form.fields:
        key = definition.key
        if key not in shown or key in failed:
            continue
        if key not in clean:
            if definition.required and definition.type != "calc":
                problems.append(Problem(field=key, message="is required"))
            continue
        value = clean[key]
        message = _range_problem(definition, value) or _date_problem(
            definition, value, birth, today
        )
        if (
            message is None
            and definition.type == "text"
            and definition.max_length is not None
            and len(value) > definition.max_length
        ):
            message = f"must be at most {definition.max_length} characters"
        if message is not None:
            problems.append(Problem(field=key, message=message))
            failed.add(key)

    env = _environment(form, clean, context)
    for rule in form.rules:
        expr = parse(rule.expr)
        when = parse(rule.when) if rule.when else None
        uses = (expr.fields | (when.fields if when else frozenset())) & failed
        if uses:
            continue  # a field the rule reads is already wrong; one report is enough
        if when is not None and not when.holds(env, today=today):
            continue
        if not expr.holds(env, today=today):
            message = rule.message.get(lang)
            problems.extend(Problem(field=key, message=message) for key in rule.fields)
    return clean, problems


# --------------------------------------------------------------------------------------------
# Eligibility


@dataclass(frozen=True)
class EligibilityResult:
    """The outcome of screening: ``eligible`` only when every criterion is met.

    ``failed`` pairs each unmet criterion's key with a message; ``missing`` lists the screening
    fields still unanswered (a subject with missing answers is not yet eligible).
    """

    eligible: bool
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def eligibility(
    protocol: Protocol,
    screening_data: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    today: date | None = None,
    lang: str = "en",
) -> EligibilityResult:
    """Return whether the screening answers meet every eligibility criterion of ``protocol``.

    Inclusion criteria must hold and exclusion criteria must not. A criterion whose answers are
    not all given fails with a message naming the missing answers (answers hidden by branching
    are not missing: they are blank, and comparisons with blank are false). The answers are
    cleaned as :func:`validate_form_data` does first (``'yes'`` counts as 1, hidden answers are
    dropped).
    """
    try:
        form = protocol.form(protocol.screening_form)
    except KeyError:
        raise ProtocolError(
            f"protocol {protocol.id!r} has no screening form {protocol.screening_form!r}"
        ) from None
    clean, _ = validate_form_data(form, screening_data, context=context, today=today, lang=lang)
    env = _environment(form, clean, context or {})
    shown = visible_fields(form, clean, context=context, today=today)
    hidden = {f.key for f in form.fields} - shown
    failed: list[tuple[str, str]] = []
    missing: set[str] = set()
    for rule in protocol.eligibility:
        expr = parse(rule.expr)
        # a hidden question is not missing: it does not apply, so it stays blank
        blanks = sorted(n for n in expr.fields - hidden if is_blank(env.get(n)))
        label = rule.message.get(lang)
        if blanks:
            missing.update(blanks)
            names = ", ".join(f"[{name}]" for name in blanks)
            failed.append((rule.key, f"{label}: no answer yet for {names}"))
            continue
        holds = expr.holds(env, today=today)
        if rule.kind == "inclusion" and not holds:
            failed.append((rule.key, f"{label}: not met"))
        elif rule.kind == "exclusion" and holds:
            failed.append((rule.key, f"{label}: applies"))
    return EligibilityResult(eligible=not failed, failed=failed, missing=sorted(missing))
