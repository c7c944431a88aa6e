"""The rule language: a small, safe expression language for branching, calc fields and rules.

The syntax follows REDCap's branching logic so that data managers can read and write it::

    [diagnosis] = 'igm' and [us_size_1_mm] > 20
    datediff([onset_date], [assessment_date], 'd') >= 0
    [presentation(abscess)] = '1'
    if([severity_score] >= 6, 'severe', 'mild')

Text is turned into tokens by a hand-written tokenizer and into a tree of frozen dataclasses by a
recursive-descent parser; evaluation walks that tree. Nothing is ever handed to ``eval``/``exec``.

Semantics in brief (the full reference is ``docs/protocols.md``):

* a missing, ``None``, ``''`` or NaN value is *blank*;
* ``X = ''`` and ``X <> ''`` test for blank; any other comparison with a blank side is false;
* comparison is loose, as in REDCap: numbers when both sides look numeric, dates when both sides
  are dates (``YYYY-MM-DD`` strings or date objects), otherwise text;
* arithmetic with a blank or non-numeric side, and division by zero, give blank;
* evaluation never raises: anything that cannot be computed is blank.
"""

from __future__ import annotations

import math
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache
from typing import Any, ClassVar

from ductal.errors import Problem, ProtocolError

__all__ = [
    "FUNCTIONS",
    "Binary",
    "Call",
    "Expression",
    "ExpressionSyntaxError",
    "FieldRef",
    "Number",
    "String",
    "Unary",
    "evaluate",
    "is_blank",
    "parse",
    "truthy",
]

MAX_DEPTH = 64
"""Deepest nesting the parser accepts; deeper input is refused rather than overflowing the stack."""

MAX_TREE_DEPTH = 200
"""Deepest syntax tree accepted (operator chains nest too): evaluation stays off the stack limit."""

MAX_LENGTH = 10_000
"""Longest expression text the parser accepts."""

# Precedence levels, loosest first. Printing uses them to place the fewest parentheses.
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _ATOM = range(1, 9)

_BINARY_PRECEDENCE = {
    "or": _OR,
    "and": _AND,
    "=": _CMP,
    "<>": _CMP,
    "<": _CMP,
    "<=": _CMP,
    ">": _CMP,
    ">=": _CMP,
    "+": _ADD,
    "-": _ADD,
    "*": _MUL,
    "/": _MUL,
}
COMPARISONS = frozenset({"=", "<>", "<", "<=", ">", ">="})


def _clip(text: str, width: int = 80) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


class ExpressionSyntaxError(ProtocolError):
    """An expression could not be parsed; ``position`` is the 1-based column of the fault."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        super().__init__(
            f"syntax error in expression {_clip(text)} at position {position}: {reason}",
            problems=[Problem(field="expression", message=f"position {position}: {reason}")],
        )


# --------------------------------------------------------------------------------------------
# Values


def is_blank(value: Any) -> bool:
    """Return True for a blank value: ``None``, ``''`` (or only spaces), NaN or an empty list."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list | tuple | set | frozenset):
        return len(value) == 0
    return False


_NUMERIC = re.compile(r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$")
_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?$",
    re.ASCII,
)


def _number(value: Any) -> int | float | None:
    """Return ``value`` as a number when it is or looks like one, else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str) and len(value) < 400 and _NUMERIC.match(value):
        if _INTEGER.match(value):
            return int(value)
        result = float(value)
        return None if math.isnan(result) else result
    return None


def _moment(value: Any) -> datetime | None:
    """Return ``value`` as a naive UTC datetime when it is a date or datetime, else None."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        try:
            if _DATE.match(text):
                return _moment(date.fromisoformat(text))
            if _DATETIME.match(text):
                return _moment(datetime.fromisoformat(text))
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    """Return the text form used for string comparison."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def truthy(value: Any) -> bool:
    """Return the truth of a value: blank is false, numbers by value, other text is true."""
    if is_blank(value):
        return False
    if isinstance(value, bool):
        return value
    number = _number(value)
    if number is not None:
        return number != 0
    return True


def _compare(op: str, left: Any, right: Any) -> bool:
    """Compare two non-blank values loosely: as numbers, else as dates, else as text."""
    a: Any
    b: Any
    ln, rn = _number(left), _number(right)
    if ln is not None and rn is not None:
        a, b = ln, rn
    else:
        lm, rm = _moment(left), _moment(right)
        if lm is not None and rm is not None:
            a, b = lm, rm
        else:
            a, b = _text(left), _text(right)
    if op == "=":
        return bool(a == b)
    if op == "<>":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _finite(value: int | float) -> int | float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _arithmetic(op: str, left: Any, right: Any) -> int | float | None:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return None
    try:
        if op == "+":
            return _finite(a + b)
        if op == "-":
            return _finite(a - b)
        if op == "*":
            if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > 4096:
                return None
            return _finite(a * b)
        if b == 0:
            return None
        return _finite(a / b)
    except (ArithmeticError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# The tree


class Context:
    """What an evaluation can see: the values and the date ``today()`` returns."""

    __slots__ = ("today", "values")

    def __init__(self, values: Mapping[str, Any], today: date | None) -> None:
        self.values = values
        self.today = today


class Expression(ABC):
    """A parsed expression: a node of the syntax tree, immutable and hashable."""

    precedence: ClassVar[int] = _ATOM

    @abstractmethod
    def _eval(self, ctx: Context) -> Any: ...

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """Return the tree as plain JSON (``{"type": ..., ...}``) for evaluation in a browser."""

    @abstractmethod
    def to_text(self) -> str:
        """Return source text that parses back to an equal tree."""

    @abstractmethod
    def children(self) -> tuple[Expression, ...]:
        """Return the direct sub-expressions."""

    def walk(self) -> Iterator[Expression]:
        """Yield this node and every node below it, depth first."""
        stack: list[Expression] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children()))

    @cached_property
    def fields(self) -> frozenset[str]:
        """Return the names of the fields the expression refers to (worked out once: parsed
        expressions are shared, and a save asks this of every rule of its form)."""
        return frozenset(node.name for node in self.walk() if isinstance(node, FieldRef))

    @property
    def field_refs(self) -> frozenset[FieldRef]:
        """Return every field reference, checkbox ones such as ``[presentation(pain)]`` included."""
        return frozenset(node for node in self.walk() if isinstance(node, FieldRef))

    def evaluate(self, values: Mapping[str, Any], *, today: date | None = None) -> Any:
        """Return the value of the expression given field ``values``; never raises.

        ``today`` fixes what ``today()`` returns (default: the current date). The result is
        ``None`` (blank), a bool, a number, a string or a date.
        """
        try:
            return self._eval(Context(values, today))
        except Exception:  # a last guard: a rule must never break data entry
            return None

    def holds(self, values: Mapping[str, Any], *, today: date | None = None) -> bool:
        """Return True when the expression evaluates to a true value."""
        return truthy(self.evaluate(values, today=today))

    def __str__(self) -> str:
        return self.to_text()


def _wrap(node: Expression, minimum: int) -> str:
    text = node.to_text()
    return f"({text})" if node.precedence < minimum else text


@dataclass(frozen=True)
class Number(Expression):
    """A number literal (never negative: ``-1`` is a unary minus applied to ``1``)."""

    value: int | float

    def _eval(self, ctx: Context) -> Any:
        return self.value

    def to_json(self) -> dict[str, Any]:
        return {"type": "number", "value": self.value}

    def to_text(self) -> str:
        return repr(self.value)

    def children(self) -> tuple[Expression, ...]:
        return ()


@dataclass(frozen=True)
class String(Expression):
    """A string literal; ``''`` stands for blank in ``= ''`` and ``<> ''``."""

    value: str

    def _eval(self, ctx: Context) -> Any:
        return self.value

    def to_json(self) -> dict[str, Any]:
        return {"type": "string", "value": self.value}

    def to_text(self) -> str:
        if "'" not in self.value:
            return f"'{self.value}'"
        if '"' not in self.value:
            return f'"{self.value}"'
        return "'" + self.value.replace("'", "''") + "'"

    def children(self) -> tuple[Expression, ...]:
        return ()


@dataclass(frozen=True)
class FieldRef(Expression):
    """``[name]``, or ``[name(code)]``: '1' when a multiple-choice field has ``code`` ticked."""

    name: str
    code: str | None = None

    def _eval(self, ctx: Context) -> Any:
        values = ctx.values
        if self.code is None:
            value = values.get(self.name)
            if isinstance(value, list | tuple | set | frozenset):
                return ",".join(sorted(_text(v) for v in value)) or None
            if isinstance(value, float) and math.isnan(value):
                return None
            return value
        value = values.get(self.name)
        if value is None and f"{self.name}___{self.code}" in values:
            # REDCap's export style: one column per checkbox option
            return "1" if truthy(values[f"{self.name}___{self.code}"]) else "0"
        if isinstance(value, Mapping):
            return "1" if truthy(value.get(self.code)) else "0"
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple | set | frozenset):
            return "1" if self.code in {_text(v) for v in value} else "0"
        return "0"

    def to_json(self) -> dict[str, Any]:
        return {"type": "field", "name": self.name, "code": self.code}

    def to_text(self) -> str:
        return f"[{self.name}]" if self.code is None else f"[{self.name}({self.code})]"

    def children(self) -> tuple[Expression, ...]:
        return ()


@dataclass(frozen=True)
class Unary(Expression):
    """``-x``, ``+x`` or ``not x``."""

    op: str
    operand: Expression

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return _NOT if self.op == "not" else _NEG

    def _eval(self, ctx: Context) -> Any:
        value = self.operand._eval(ctx)
        if self.op == "not":
            return not truthy(value)
        number = _number(value)
        if number is None:
            return None
        return -number if self.op == "-" else number

    def to_json(self) -> dict[str, Any]:
        return {"type": "unary", "op": self.op, "operand": self.operand.to_json()}

    def to_text(self) -> str:
        if self.op == "not":
            return f"not {_wrap(self.operand, _NOT)}"
        inner = _wrap(self.operand, _NEG)
        # keep "- -1" from printing as "--1": harmless today, but a trap for a future comment syntax
        sep = " " if inner.startswith(("-", "+")) else ""
        return f"{self.op}{sep}{inner}"

    def children(self) -> tuple[Expression, ...]:
        return (self.operand,)


def _is_blank_literal(node: Expression) -> bool:
    return isinstance(node, String) and node.value == ""


@dataclass(frozen=True)
class Binary(Expression):
    """An arithmetic, comparison or logical operator with two operands."""

    op: str
    left: Expression
    right: Expression

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return _BINARY_PRECEDENCE[self.op]

    def _eval(self, ctx: Context) -> Any:
        op = self.op
        if op == "and":
            return truthy(self.left._eval(ctx)) and truthy(self.right._eval(ctx))
        if op == "or":
            return truthy(self.left._eval(ctx)) or truthy(self.right._eval(ctx))
        if op in COMPARISONS:
            if op in ("=", "<>"):
                # X = '' is REDCap's blank test; X <> '' its negation
                if _is_blank_literal(self.right):
                    return is_blank(self.left._eval(ctx)) == (op == "=")
                if _is_blank_literal(self.left):
                    return is_blank(self.right._eval(ctx)) == (op == "=")
            left, right = self.left._eval(ctx), self.right._eval(ctx)
            if is_blank(left) or is_blank(right):
                return False
            try:
                return _compare(op, left, right)
            except (TypeError, ValueError, OverflowError):
                return False
        return _arithmetic(op, self.left._eval(ctx), self.right._eval(ctx))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "binary",
            "op": self.op,
            "left": self.left.to_json(),
            "right": self.right.to_json(),
        }

    def to_text(self) -> str:
        level = self.precedence
        # operators are left-associative: an equal-precedence right operand needs parentheses
        return f"{_wrap(self.left, level)} {self.op} {_wrap(self.right, level + 1)}"

    def children(self) -> tuple[Expression, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Call(Expression):
    """A function call such as ``datediff([a], [b], 'd')``."""

    name: str
    args: tuple[Expression, ...]

    def _eval(self, ctx: Context) -> Any:
        if self.name == "if":
            condition, yes, no = self.args
            return yes._eval(ctx) if truthy(condition._eval(ctx)) else no._eval(ctx)
        if self.name == "today":
            return ctx.today or date.today()
        spec = FUNCTIONS[self.name]
        try:
            return spec.impl(*(arg._eval(ctx) for arg in self.args))
        except (ArithmeticError, ValueError, TypeError):
            return None

    def to_json(self) -> dict[str, Any]:
        return {"type": "call", "name": self.name, "args": [a.to_json() for a in self.args]}

    def to_text(self) -> str:
        return f"{self.name}({', '.join(a.to_text() for a in self.args)})"

    def children(self) -> tuple[Expression, ...]:
        return self.args


# --------------------------------------------------------------------------------------------
# Functions

_DAYS_PER = {"d": 1.0, "w": 7.0, "m": 30.44, "y": 365.2425, "h": 1 / 24}


def _datediff(a: Any, b: Any, unit: Any = "d") -> int | float | None:
    start, end = _moment(a), _moment(b)
    if start is None or end is None or not isinstance(unit, str) or unit not in _DAYS_PER:
        return None
    delta = end - start
    if unit == "d" and delta.seconds == 0 and delta.microseconds == 0:
        return delta.days
    days = delta.total_seconds() / 86400.0
    return days / _DAYS_PER[unit]


def _numbers(args: tuple[Any, ...]) -> list[int | float]:
    found = [_number(a) for a in args]
    return [n for n in found if n is not None]


def _sum(*args: Any) -> int | float | None:
    numbers = _numbers(args)
    return _finite(sum(numbers)) if numbers else None


def _min(*args: Any) -> int | float | None:
    numbers = _numbers(args)
    return min(numbers) if numbers else None


def _max(*args: Any) -> int | float | None:
    numbers = _numbers(args)
    return max(numbers) if numbers else None


def _mean(*args: Any) -> float | None:
    numbers = _numbers(args)
    return _finite(math.fsum(numbers) / len(numbers)) if numbers else None


def _round(x: Any, digits: Any = 0) -> int | float | None:
    number, places = _number(x), _number(digits)
    if number is None or places is None or not float(places).is_integer():
        return None
    places = int(places)
    if not -20 <= places <= 20:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    result = round(number, places)
    return int(result) if places <= 0 else result


def _abs(x: Any) -> int | float | None:
    number = _number(x)
    return None if number is None else abs(number)


def _isblank(x: Any) -> bool:
    return is_blank(x)


@dataclass(frozen=True)
class FunctionSpec:
    """A built-in function: its argument count range and its implementation."""

    min_args: int
    max_args: int | None
    impl: Callable[..., Any]
    signature: str


def _unused(*args: Any) -> None:  # if() and today() are evaluated by Call itself
    return None


FUNCTIONS: dict[str, FunctionSpec] = {
    "datediff": FunctionSpec(2, 3, _datediff, "datediff(a, b, unit='d') -> b - a in d, w, m, y, h"),
    "today": FunctionSpec(0, 0, _unused, "today() -> the current date"),
    "isblank": FunctionSpec(1, 1, _isblank, "isblank(x) -> true when x is blank"),
    "if": FunctionSpec(3, 3, _unused, "if(condition, then, else)"),
    "sum": FunctionSpec(1, None, _sum, "sum(x, ...) -> total of the non-blank numbers"),
    "min": FunctionSpec(1, None, _min, "min(x, ...) -> smallest non-blank number"),
    "max": FunctionSpec(1, None, _max, "max(x, ...) -> largest non-blank number"),
    "mean": FunctionSpec(1, None, _mean, "mean(x, ...) -> mean of the non-blank numbers"),
    "round": FunctionSpec(1, 2, _round, "round(x, n=0) -> x rounded to n decimal places"),
    "abs": FunctionSpec(1, 1, _abs, "abs(x) -> absolute value"),
}


# --------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, field, name, op, end
    text: str
    pos: int  # 0-based offset
    value: Any = None


_FIELD = re.compile(r"\[\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(\s*([A-Za-z0-9_.+-]+)\s*\)\s*)?\]")
_NUMBER = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("<>", "!=", "<=", ">=", "==", "=", "<", ">", "+", "-", "*", "/", "(", ")", ",")
_KEYWORDS = frozenset({"and", "or", "not"})
_DIGITS = frozenset(string.digits)
_NAME_START = frozenset(string.ascii_letters + "_")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "[":
            match = _FIELD.match(text, i)
            if not match:
                raise ExpressionSyntaxError(
                    text, i + 1, "a field reference must look like [name] or [name(code)]"
                )
            tokens.append(_Token("field", match.group(0), i, (match.group(1), match.group(2))))
            i = match.end()
            continue
        if ch in "'\"":
            j, parts = i + 1, []
            while True:
                end = text.find(ch, j)
                if end < 0:
                    raise ExpressionSyntaxError(text, i + 1, "unterminated string")
                parts.append(text[j:end])
                if end + 1 < n and text[end + 1] == ch:  # a doubled quote stands for itself
                    parts.append(ch)
                    j = end + 2
                    continue
                break
            tokens.append(_Token("string", text[i : end + 1], i, "".join(parts)))
            i = end + 1
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            match = _NUMBER.match(text, i)
            assert match is not None
            literal = match.group(0)
            value: int | float
            if match.group(2) is None and match.group(3) is None and "." not in literal:
                value = int(literal)
            else:
                value = float(literal)
                if not math.isfinite(value):
                    raise ExpressionSyntaxError(text, i + 1, f"number {literal} is too large")
            tokens.append(_Token("number", literal, i, value))
            i = match.end()
            continue
        if ch in _NAME_START:
            match = _NAME.match(text, i)
            assert match is not None
            word = match.group(0)
            lowered = word.lower()
            kind = "op" if lowered in _KEYWORDS else "name"
            tokens.append(_Token(kind, word, i, lowered))
            i = match.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                canonical = {"!=": "<>", "==": "="}.get(op, op)
                tokens.append(_Token("op", op, i, canonical))
                i += len(op)
                break
        else:
            raise ExpressionSyntaxError(text, i + 1, f"unexpected character {ch!r}")
    tokens.append(_Token("end", "", n, None))
    return tokens


# --------------------------------------------------------------------------------------------
# Parser


def _depth(root: Expression) -> int:
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node.children())
    return deepest


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def fail(self, reason: str, token: _Token | None = None) -> ExpressionSyntaxError:
        token = token or self.token
        return ExpressionSyntaxError(self.text, token.pos + 1, reason)

    def describe(self, token: _Token) -> str:
        return "end of expression" if token.kind == "end" else repr(token.text)

    def accept(self, *ops: str) -> _Token | None:
        token = self.token
        if token.kind == "op" and token.value in ops:
            self.index += 1
            return token
        return None

    def expect(self, op: str, context: str) -> None:
        if not self.accept(op):
            raise self.fail(f"expected {op!r} {context}, found {self.describe(self.token)}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"expression nested more than {MAX_DEPTH} levels deep")

    def parse(self) -> Expression:
        if not self.text.strip():
            raise self.fail("empty expression")
        node = self.disjunction()
        if self.token.kind != "end":
            raise self.fail(f"unexpected {self.describe(self.token)}")
        if _depth(node) > MAX_TREE_DEPTH:
            raise ExpressionSyntaxError(
                self.text, 1, f"expression nested more than {MAX_TREE_DEPTH} levels deep"
            )
        return node

    def disjunction(self) -> Expression:
        node = self.conjunction()
        while self.accept("or"):
            node = Binary("or", node, self.conjunction())
        return node

    def conjunction(self) -> Expression:
        node = self.negation()
        while self.accept("and"):
            node = Binary("and", node, self.negation())
        return node

    def negation(self) -> Expression:
        if self.accept("not"):
            self.enter()
            node = Unary("not", self.negation())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Expression:
        node = self.additive()
        while True:
            token = self.accept(*COMPARISONS)
            if token is None:
                return node
            node = Binary(token.value, node, self.additive())

    def additive(self) -> Expression:
        node = self.multiplicative()
        while True:
            token = self.accept("+", "-")
            if token is None:
                return node
            node = Binary(token.value, node, self.multiplicative())

    def multiplicative(self) -> Expression:
        node = self.signed()
        while True:
            token = self.accept("*", "/")
            if token is None:
                return node
            node = Binary(token.value, node, self.signed())

    def signed(self) -> Expression:
        token = self.accept("-", "+")
        if token is not None:
            self.enter()
            node = Unary(token.value, self.signed())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Expression:
        token = self.token
        if token.kind == "number":
            self.index += 1
            return Number(token.value)
        if token.kind == "string":
            self.index += 1
            return String(token.value)
        if token.kind == "field":
            self.index += 1
            name, code = token.value
            return FieldRef(name, code)
        if token.kind == "name":
            return self.call()
        if self.accept("("):
            self.enter()
            node = self.disjunction()
            self.expect(")", "to close '('")
            self.depth -= 1
            return node
        if token.kind == "end":
            raise self.fail("expression ends too early")
        raise self.fail(f"unexpected {self.describe(token)}")

    def call(self) -> Expression:
        token = self.token
        name = token.value
        spec = FUNCTIONS.get(name)
        if spec is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.fail(
                f"unknown name {token.text!r} (field names go in brackets; functions: {known})"
            )
        self.index += 1
        self.expect("(", f"after {name}")
        self.enter()
        args: list[Expression] = []
        if not self.accept(")"):
            while True:
                args.append(self.disjunction())
                if self.accept(")"):
                    break
                self.expect(",", f"or ')' in the arguments of {name}")
        self.depth -= 1
        if len(args) < spec.min_args or (spec.max_args is not None and len(args) > spec.max_args):
            if spec.max_args is None:
                wanted = f"at least {spec.min_args}"
            elif spec.min_args == spec.max_args:
                wanted = str(spec.min_args)
            else:
                wanted = f"{spec.min_args} to {spec.max_args}"
            raise self.fail(f"{name}() takes {wanted} argument(s), got {len(args)}", token)
        if name == "datediff" and len(args) == 3:
            unit = args[2]
            if isinstance(unit, String) and unit.value not in _DAYS_PER:
                units = ", ".join(repr(u) for u in _DAYS_PER)
                raise self.fail(f"datediff unit must be one of {units}", token)
        return Call(name, tuple(args))


@lru_cache(maxsize=4096)
def parse(text: str) -> Expression:
    """Return the syntax tree of ``text``; raise :class:`ExpressionSyntaxError` (a ProtocolError).

    Results are cached by text, which is safe because trees are immutable.
    """
    if not isinstance(text, str):
        raise ProtocolError(
            "an expression must be text",
            problems=[Problem(field="expression", message="must be text")],
        )
    if len(text) > MAX_LENGTH:
        raise ExpressionSyntaxError(text, MAX_LENGTH + 1, f"longer than {MAX_LENGTH} characters")
    return _Parser(text).parse()


def evaluate(text: str, values: Mapping[str, Any], *, today: date | None = None) -> Any:
    """Parse ``text`` (cached) and return its value given ``values``."""
    return parse(text).evaluate(values, today=today)
