"""Load protocol definitions from YAML and check them thoroughly.

Loading happens in three passes, each reporting *every* fault it finds with its path in the
document (``forms[3].fields[7].choices``): YAML syntax (with line and column), the pydantic model,
then cross-references the model cannot see on its own (forms named by the schedule exist, every
expression parses and refers only to fields it can see, strata levels are choice codes, ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ductal.errors import NotFound, Problem, ProtocolError
from ductal.protocols.logic import Expression, ExpressionSyntaxError, parse
from ductal.protocols.model import FormDef, ProcedureSettings, Protocol

__all__ = [
    "CONTEXT_NAMES",
    "ENDPOINT_EVENTS",
    "builtin_ids",
    "builtin_protocol",
    "builtin_protocols",
    "check_protocol",
    "load_protocol",
    "parse_protocol",
    "resolve_protocol",
]

CONTEXT_NAMES = frozenset({"date_of_birth", "enrolment_date", "first_session_date"})
"""Names every expression may use besides its form's fields; supplied by the caller at run time."""

ENDPOINT_EVENTS = frozenset(
    {
        "complete_response",
        "relapse",
        "surgery",
        "systemic_steroid",
        "methotrexate",
        "rescue_any",
        "response_cr_pr",
        "adverse_event",
    }
)
"""Event names an endpoint may count; :mod:`ductal.outcomes` knows how to derive each one."""

RESPONSE_CODES = frozenset({"cr", "pr", "sd", "pd"})


# --------------------------------------------------------------------------------------------
# YAML


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~9x


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses a mapping with the same key twice (PyYAML keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        reason = exc.problem or exc.context or "invalid YAML"
        raise ProtocolError(
            f"{source}: not valid YAML",
            problems=[Problem(field="<document>", message=f"{where}: {reason}")],
        ) from exc
    except yaml.YAMLError as exc:
        raise ProtocolError(
            f"{source}: not valid YAML",
            problems=[Problem(field="<document>", message=str(exc))],
        ) from exc


# --------------------------------------------------------------------------------------------
# Paths


def format_path(loc: Iterable[str | int]) -> str:
    """Return a pydantic error location as a document path: ``forms[3].fields[7].choices``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<root>"


def _pydantic_problems(error: pydantic.ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        message = str(item["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(Problem(field=format_path(item["loc"]), message=message))
    return problems


# --------------------------------------------------------------------------------------------
# Cross-reference checks


class _Checker:
    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(field=path, message=message))

    def unique(self, path: str, keys: Sequence[str], what: str) -> None:
        counts = Counter(keys)
        for index, key in enumerate(keys):
            if counts[key] > 1 and keys.index(key) != index:
                self.add(f"{path}[{index}].key", f"{what} {key!r} is used more than once")

    def expression(
        self, path: str, text: str, visible: FormDef, *, allow_self: str | None = None
    ) -> Expression | None:
        """Parse ``text`` and check that it only names fields of ``visible`` or context names."""
        try:
            expr = parse(text)
        except ExpressionSyntaxError as exc:
            self.add(path, f"position {exc.position}: {exc.reason}")
            return None
        except ProtocolError as exc:
            self.add(path, exc.message)
            return None
        keys = {f.key for f in visible.fields}
        for ref in sorted(expr.field_refs, key=lambda r: (r.name, r.code or "")):
            if ref.name == allow_self:
                self.add(path, f"field {ref.name!r} refers to itself")
                continue
            if ref.name not in keys:
                if ref.name in CONTEXT_NAMES and ref.code is None:
                    continue
                self.add(path, f"unknown field {ref.name!r} (not on form {visible.key!r})")
                continue
            field = visible.field(ref.name)
            if ref.code is not None:
                if field.type != "multi_choice":
                    self.add(path, f"[{ref.name}({ref.code})]: {ref.name!r} is not multi_choice")
                elif ref.code not in {c.code for c in field.choices}:
                    self.add(path, f"{ref.code!r} is not a choice of {ref.name!r}")
        return expr

    def run(self) -> list[Problem]:
        p = self.protocol
        form_keys = [f.key for f in p.forms]
        forms = {f.key: f for f in p.forms}

        self.unique("arms", [a.key for a in p.arms], "arm")
        self.unique("strata", [s.key for s in p.strata], "stratum")
        self.unique("eligibility", [e.key for e in p.eligibility], "eligibility rule")
        self.unique("schedule", [e.key for e in p.schedule], "event")
        self.unique("forms", form_keys, "form")
        self.unique("endpoints", [e.key for e in p.endpoints], "endpoint")
        self.unique("benchmarks", [b.key for b in p.benchmarks], "benchmark")

        self.check_design()
        self.check_schedule(forms)
        for index, form in enumerate(p.forms):
            self.check_form(f"forms[{index}]", form)
        self.check_screening(forms)
        self.check_strata(forms)
        self.check_response(forms)
        self.check_endpoints()
        self.check_procedure_settings(forms)
        for index, bench in enumerate(p.benchmarks):
            if bench.high is not None and bench.high < bench.low:
                self.add(f"benchmarks[{index}].high", "is below low")
        return self.problems

    def check_design(self) -> None:
        p = self.protocol
        ratio = sum(a.ratio for a in p.arms)
        if p.design == "single_arm":
            if len(p.arms) != 1:
                self.add("arms", f"a single_arm design has exactly one arm, not {len(p.arms)}")
            if p.randomisation.method != "none":
                self.add("randomisation.method", "a single_arm design is not randomised")
            if p.strata:
                self.add("strata", "a single_arm design has no randomisation strata")
            return
        if len(p.arms) < 2:
            self.add("arms", f"a {p.design} design needs at least two arms")
        if p.randomisation.method == "none":
            self.add("randomisation.method", f"a {p.design} design needs a randomisation method")
        if p.randomisation.method == "permuted_blocks":
            if not p.randomisation.block_sizes:
                self.add("randomisation.block_sizes", "permuted blocks need at least one size")
            for index, size in enumerate(p.randomisation.block_sizes):
                if size < 1 or size % ratio:
                    ratios = ":".join(str(a.ratio) for a in p.arms)
                    self.add(
                        f"randomisation.block_sizes[{index}]",
                        f"block size {size} is not a multiple of {ratio}, the total of the "
                        f"allocation ratio {ratios}",
                    )

    def check_schedule(self, forms: dict[str, FormDef]) -> None:
        p = self.protocol
        arm_keys = {a.key for a in p.arms}
        scheduled: set[str] = set()
        for index, event in enumerate(p.schedule):
            path = f"schedule[{index}]"
            for j, key in enumerate(event.forms):
                scheduled.add(key)
                if key not in forms:
                    self.add(f"{path}.forms[{j}]", f"no form {key!r} in forms")
            if len(set(event.forms)) != len(event.forms):
                self.add(f"{path}.forms", "lists a form more than once")
            for j, arm in enumerate(event.arms):
                if arm not in arm_keys:
                    self.add(f"{path}.arms[{j}]", f"no arm {arm!r} in arms")
            if event.kind != "unscheduled" and event.day > p.follow_up_days:
                self.add(f"{path}.day", f"day {event.day} is after follow_up_days")
            if event.repeat is not None:
                for j, key in enumerate(event.forms):
                    if key in forms and not forms[key].repeating:
                        self.add(
                            f"{path}.forms[{j}]",
                            f"form {key!r} is used by a repeating event but is not repeating",
                        )
        for index, form in enumerate(p.forms):
            if form.key not in scheduled:
                self.add(f"forms[{index}].key", f"form {form.key!r} is in no scheduled event")

    def check_form(self, path: str, form: FormDef) -> None:
        self.unique(f"{path}.rules", [r.key for r in form.rules], "rule")
        keys = {f.key for f in form.fields}
        for index, field in enumerate(form.fields):
            where = f"{path}.fields[{index}]"
            if field.show_if is not None:
                self.expression(f"{where}.show_if", field.show_if, form, allow_self=field.key)
            if field.calc is not None:
                if field.type != "calc":
                    self.add(f"{where}.calc", f"only calc fields have a calc, not {field.type}")
                self.expression(f"{where}.calc", field.calc, form, allow_self=field.key)
            if field.decimals is not None and field.type not in ("number", "calc"):
                self.add(f"{where}.decimals", f"only number and calc fields, not {field.type}")
            if field.max_length is not None and field.type != "text":
                self.add(f"{where}.max_length", f"only text fields, not {field.type}")
            ranged = ("integer", "number", "calc")
            if (field.min is not None or field.max is not None) and field.type not in ranged:
                self.add(f"{where}.min", f"a range is for numeric fields, not {field.type}")
        for index, rule in enumerate(form.rules):
            where = f"{path}.rules[{index}]"
            self.expression(f"{where}.expr", rule.expr, form)
            if rule.when is not None:
                self.expression(f"{where}.when", rule.when, form)
            for j, key in enumerate(rule.fields):
                if key not in keys:
                    self.add(f"{where}.fields[{j}]", f"no field {key!r} on form {form.key!r}")

    def check_screening(self, forms: dict[str, FormDef]) -> None:
        p = self.protocol
        screening = forms.get(p.screening_form)
        if screening is None:
            self.add("screening_form", f"no form {p.screening_form!r} in forms")
        elif not any(e.kind == "screening" and p.screening_form in e.forms for e in p.schedule):
            self.add(
                "screening_form", f"form {p.screening_form!r} is on no event of kind screening"
            )
        for index, rule in enumerate(p.eligibility):
            if screening is not None:
                self.expression(f"eligibility[{index}].expr", rule.expr, screening)

    def check_strata(self, forms: dict[str, FormDef]) -> None:
        for index, stratum in enumerate(self.protocol.strata):
            path = f"strata[{index}]"
            form = forms.get(stratum.form)
            if form is None:
                self.add(f"{path}.form", f"no form {stratum.form!r} in forms")
                continue
            try:
                field = form.field(stratum.field)
            except KeyError:
                self.add(f"{path}.field", f"no field {stratum.field!r} on form {form.key!r}")
                continue
            if field.type != "choice":
                self.add(f"{path}.field", f"field {field.key!r} is {field.type}, not choice")
                continue
            codes = [c.code for c in field.choices]
            for j, level in enumerate(stratum.levels):
                if level not in codes:
                    self.add(
                        f"{path}.levels[{j}]",
                        f"{level!r} is not a choice of {field.key!r}: {', '.join(codes)}",
                    )
            if len(set(stratum.levels)) != len(stratum.levels):
                self.add(f"{path}.levels", "lists a level more than once")

    def check_response(self, forms: dict[str, FormDef]) -> None:
        criteria = self.protocol.response
        form = forms.get(criteria.form)
        if form is None:
            self.add("response.form", f"no form {criteria.form!r} in forms")
            return
        keys = {f.key for f in form.fields}

        def need(path: str, key: str, types: tuple[str, ...]) -> None:
            if key not in keys:
                self.add(path, f"no field {key!r} on form {form.key!r}")
            elif form.field(key).type not in types:
                self.add(path, f"field {key!r} must be {' or '.join(types)}")

        for name in ("size_fields", "clinical_sign_fields", "new_lesion_fields"):
            types = ("number", "integer") if name == "size_fields" else ("yes_no",)
            for j, key in enumerate(getattr(criteria, name)):
                need(f"response.{name}[{j}]", key, types)
        if criteria.escalation_field is not None:
            need("response.escalation_field", criteria.escalation_field, ("yes_no",))
        for name in ("scar_field", "ultrasound_done_field", "relapse_field"):
            key = getattr(criteria, name, None)
            if key is not None:
                need(f"response.{name}", key, ("yes_no",))
        baseline = getattr(criteria, "baseline_form", None)
        if baseline is not None:
            if baseline not in forms:
                self.add("response.baseline_form", f"no form {baseline!r} in forms")
            else:
                base_keys = {f.key for f in forms[baseline].fields}
                for j, key in enumerate(criteria.size_fields):
                    if key not in base_keys:
                        self.add(
                            f"response.size_fields[{j}]",
                            f"no field {key!r} on the baseline form {baseline!r} to compare with",
                        )
        need("response.investigator_field", criteria.investigator_field, ("choice",))
        if criteria.investigator_field in keys:
            codes = {c.code for c in form.field(criteria.investigator_field).choices}
            missing = sorted(RESPONSE_CODES - codes)
            if missing:
                self.add(
                    "response.investigator_field", f"choices lack the codes {', '.join(missing)}"
                )

    def check_procedure_settings(self, forms: dict[str, FormDef]) -> None:
        """Check ``settings.procedure`` (read by :mod:`ductal.procedure`) when it is present.

        Its rules read fields from several forms, so only their syntax and the forms they name
        are checked here.
        """
        raw = self.protocol.settings.get("procedure")
        if raw is None:
            return
        try:
            procedure = ProcedureSettings.model_validate(raw)
        except pydantic.ValidationError as exc:
            for problem in _pydantic_problems(exc):
                self.add(f"settings.procedure.{problem.field}", problem.message)
            return
        for name in ("checks_form", "record_form"):
            key = getattr(procedure, name)
            if key not in forms:
                self.add(f"settings.procedure.{name}", f"no form {key!r} in forms")
        for group in ("checks", "rules"):
            for index, rule in enumerate(getattr(procedure, group)):
                path = f"settings.procedure.{group}[{index}]"
                for j, key in enumerate(rule.forms):
                    if key not in forms:
                        self.add(f"{path}.forms[{j}]", f"no form {key!r} in forms")
                try:
                    parse(rule.when)
                except ExpressionSyntaxError as exc:
                    self.add(f"{path}.when", f"position {exc.position}: {exc.reason}")

    def check_endpoints(self) -> None:
        p = self.protocol
        known = ", ".join(sorted(ENDPOINT_EVENTS))
        primaries = [i for i, e in enumerate(p.endpoints) if e.primary]
        for index in primaries[1:]:
            self.add(f"endpoints[{index}].primary", "only one endpoint can be primary")
        for index, endpoint in enumerate(p.endpoints):
            path = f"endpoints[{index}]"
            if endpoint.event not in ENDPOINT_EVENTS:
                self.add(f"{path}.event", f"unknown event {endpoint.event!r}; known: {known}")
            for j, name in enumerate(endpoint.competing):
                if name not in ENDPOINT_EVENTS:
                    self.add(f"{path}.competing[{j}]", f"unknown event {name!r}; known: {known}")
                elif name == endpoint.event:
                    self.add(f"{path}.competing[{j}]", "an event cannot compete with itself")
            if endpoint.kind == "competing_risks" and not endpoint.competing:
                self.add(f"{path}.competing", "a competing_risks endpoint needs competing events")
            if endpoint.kind == "binary" and endpoint.horizon_days is None:
                self.add(f"{path}.horizon_days", "a binary endpoint needs a horizon")
            margin = endpoint.non_inferiority_margin
            if margin is not None:
                if not -1 < margin < 0:
                    self.add(
                        f"{path}.non_inferiority_margin",
                        "must be a negative difference in proportions between -1 and 0",
                    )
                if endpoint.kind != "binary":
                    self.add(f"{path}.non_inferiority_margin", "only for binary endpoints")
                if not p.is_randomised:
                    self.add(f"{path}.non_inferiority_margin", "needs a randomised comparison")


def check_protocol(protocol: Protocol) -> list[Problem]:
    """Return every cross-reference problem in a protocol the model accepted (empty when sound)."""
    return _Checker(protocol).run()


# --------------------------------------------------------------------------------------------
# Entry points


def parse_protocol(text: str, source: str = "<string>") -> Protocol:
    """Return the protocol defined by YAML ``text``; raise ProtocolError listing every problem."""
    data = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise ProtocolError(
            f"{source}: not a protocol definition",
            problems=[Problem(field="<root>", message="the document must be a mapping of keys")],
        )
    try:
        protocol = Protocol.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = _pydantic_problems(exc)
        raise ProtocolError(
            f"{source}: {len(problems)} problem(s) in the protocol definition", problems=problems
        ) from None
    problems = check_protocol(protocol)
    if problems:
        raise ProtocolError(
            f"{source}: {len(problems)} problem(s) in the protocol definition", problems=problems
        )
    return protocol


def load_protocol(path: str | Path) -> Protocol:
    """Return the protocol defined in the YAML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no protocol file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"cannot read protocol file {str(path)!r}: {exc}") from None
    return parse_protocol(text, source=str(path))


def _builtin_dir() -> Any:
    return resources.files("ductal.protocols").joinpath("builtin")


def builtin_ids() -> list[str]:
    """Return the ids of the protocols shipped with ductal, sorted."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in _builtin_dir().iterdir()
        if entry.name.endswith(".yaml")
    )


@cache
def builtin_protocol(protocol_id: str) -> Protocol:
    """Return the built-in protocol ``protocol_id``; NotFound when there is none."""
    if protocol_id not in builtin_ids():
        raise NotFound(
            f"no built-in protocol {protocol_id!r}; built-in: {', '.join(builtin_ids())}"
        )
    entry = _builtin_dir().joinpath(f"{protocol_id}.yaml")
    protocol = parse_protocol(entry.read_text(encoding="utf-8"), source=f"builtin:{protocol_id}")
    if protocol.id != protocol_id:
        raise ProtocolError(
            f"builtin:{protocol_id}: the file name and the id differ",
            problems=[Problem(field="id", message=f"is {protocol.id!r}, file is {protocol_id!r}")],
        )
    return protocol


def builtin_protocols() -> list[Protocol]:
    """Return every built-in protocol, in id order."""
    return [builtin_protocol(pid) for pid in builtin_ids()]


def resolve_protocol(ref: str | Path) -> Protocol:
    """Return the protocol in the file ``ref`` if there is one, else the built-in with that id."""
    path = Path(ref)
    if path.is_file():
        return load_protocol(path)
    if str(ref) in builtin_ids():
        return builtin_protocol(str(ref))
    raise NotFound(
        f"{str(ref)!r} is neither a protocol file nor a built-in protocol "
        f"({', '.join(builtin_ids())})"
    )
