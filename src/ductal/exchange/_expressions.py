"""Rewrite rule-language expressions: rename field references, adapt to REDCap's dialect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ductal.protocols.logic import (
    Binary,
    Call,
    Expression,
    FieldRef,
    Number,
    String,
    Unary,
    parse,
)

__all__ = ["from_redcap", "rename_fields", "to_redcap"]


def _map(node: Expression, fn: Callable[[Expression], Expression | None]) -> Expression:
    replaced = fn(node)
    if replaced is not None:
        return replaced
    if isinstance(node, Unary):
        return Unary(node.op, _map(node.operand, fn))
    if isinstance(node, Binary):
        return Binary(node.op, _map(node.left, fn), _map(node.right, fn))
    if isinstance(node, Call):
        return Call(node.name, tuple(_map(a, fn) for a in node.args))
    return node


def rename_fields(text: str, names: dict[str, str]) -> str:
    """Return ``text`` with the ``[field]`` references in ``names`` renamed (parse errors raise)."""

    def rename(node: Expression) -> Expression | None:
        if isinstance(node, FieldRef) and node.name in names:
            return FieldRef(names[node.name], node.code)
        return None

    return _map(parse(text), rename).to_text()


@dataclass(frozen=True)
class _Raw(Expression):
    """Text written as it is (REDCap syntax ductal's parser does not read)."""

    text: str

    def _eval(self, ctx: Any) -> Any:  # pragma: no cover - never evaluated
        return None

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - never serialised
        return {"type": "raw", "text": self.text}

    def to_text(self) -> str:
        return self.text

    def children(self) -> tuple[Expression, ...]:
        return ()


def to_redcap(text: str, names: dict[str, str]) -> tuple[str, list[str]]:
    """Return ``text`` in REDCap's dialect with fields renamed, and notes on inexact steps.

    REDCap has no ``not`` and no ``isblank()``: ``isblank(x)`` becomes ``x = ''`` and
    ``not isblank(x)`` becomes ``x <> ''``; any other ``not e`` becomes ``(e) = 0``.
    ``datediff`` is signed in ductal but unsigned in REDCap unless asked: it is written with
    REDCap's date format and ``returnSignedValue`` arguments (``'ymd', true``), and ``today()``
    inside it as REDCap's ``'today'``.
    """
    notes: list[str] = []

    def adapt(node: Expression) -> Expression | None:
        if isinstance(node, FieldRef) and node.name in names:
            return FieldRef(names[node.name], node.code)
        if isinstance(node, Call) and node.name == "datediff":
            args = [
                "'today'" if isinstance(a, Call) and a.name == "today" else _map(a, adapt).to_text()
                for a in node.args
            ]
            if len(args) == 2:
                args.append("'d'")
            return _Raw(f"datediff({', '.join(args)}, 'ymd', true)")
        if isinstance(node, Call) and node.name == "today":
            notes.append("today() outside datediff has no REDCap equivalent; written as is")
            return None
        if isinstance(node, Call) and node.name == "isblank":
            return Binary("=", _map(node.args[0], adapt), String(""))
        if isinstance(node, Unary) and node.op == "not":
            inner = node.operand
            if isinstance(inner, Call) and inner.name == "isblank":
                return Binary("<>", _map(inner.args[0], adapt), String(""))
            notes.append("'not e' written as '(e) = 0'")
            return Binary("=", _map(inner, adapt), Number(0))
        return None

    return _map(parse(text), adapt).to_text(), notes


_FORMATS = {"ymd", "mdy", "dmy"}


def _split_arguments(text: str, start: int) -> tuple[list[str], int] | None:
    """Return the top-level arguments of the call whose '(' is at ``start``, and its end."""
    depth, quote, args, current = 0, "", [], []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch in "([":
            depth += 1
            current.append(ch)
        elif ch in ")]" and depth:
            depth -= 1
            current.append(ch)
        elif ch == ")":
            args.append("".join(current).strip())
            return args, i
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    return None


def _unquote(arg: str) -> str:
    return arg.strip().strip("'\"").lower()


def from_redcap(text: str) -> str:
    """Return REDCap logic in ductal's words: ``datediff`` and ``'today'`` as REDCap means them.

    REDCap's ``datediff(a, b, unit[, format][, returnSignedValue])`` is unsigned unless the last
    argument is true; ductal's is signed, so an unsigned one is wrapped in ``abs()``. A date
    written ``'today'`` becomes ``today()``. Other text is left alone (the parser judges it).
    """
    out: list[str] = []
    i = 0
    lowered = text.lower()
    while True:
        j = lowered.find("datediff", i)
        if j < 0:
            out.append(text[i:])
            break
        k = j + len("datediff")
        while k < len(text) and text[k].isspace():
            k += 1
        if (
            k >= len(text)
            or text[k] != "("
            or (j > 0 and (text[j - 1].isalnum() or text[j - 1] == "_"))
        ):
            out.append(text[i:k])
            i = k
            continue
        parsed = _split_arguments(text, k)
        if parsed is None:
            out.append(text[i:])
            break
        args, end = parsed
        signed = False
        rest = args[3:]
        if rest and _unquote(rest[-1]) in ("true", "1"):
            signed = True
            rest = rest[:-1]
        elif rest and _unquote(rest[-1]) in ("false", "0"):
            rest = rest[:-1]
        if rest and _unquote(rest[0]) in _FORMATS:
            rest = rest[1:]
        core = [from_redcap(a) if _unquote(a) != "today" else "today()" for a in args[:3]]
        if rest:  # something we do not understand: leave it for the parser to report
            core += rest
        call = f"datediff({', '.join(core)})"
        out.append(text[i:j] + (call if signed or rest else f"abs({call})"))
        i = end + 1
    return "".join(out)
