"""Rewrite rule-language expressions: rename field references, adapt to REDCap's dialect."""

from __future__ import annotations

from collections.abc import Callable

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

__all__ = ["rename_fields", "to_redcap"]


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


def to_redcap(text: str, names: dict[str, str]) -> tuple[str, list[str]]:
    """Return ``text`` in REDCap's dialect with fields renamed, and notes on inexact steps.

    REDCap has no ``not`` and no ``isblank()``: ``isblank(x)`` becomes ``x = ''`` and
    ``not isblank(x)`` becomes ``x <> ''``; any other ``not e`` becomes ``(e) = 0``.
    """
    notes: list[str] = []

    def adapt(node: Expression) -> Expression | None:
        if isinstance(node, FieldRef) and node.name in names:
            return FieldRef(names[node.name], node.code)
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
