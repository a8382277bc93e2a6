"""Evaluating a condition's expression over a run's inputs, event and branch."""

from __future__ import annotations

from collections.abc import Mapping

from services.pipeline import expressions
from services.pipeline.expressions import And, Compare, Expr, Literal, Not, Or, Ref, Truthy


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _operand(operand: Ref | Literal, scope: Mapping[str, object]) -> str:
    if isinstance(operand, Literal):
        return _text(operand.value)
    if operand.scope == "inputs":
        inputs = scope.get("inputs")
        return _text(inputs.get(operand.name) if isinstance(inputs, Mapping) else None)
    return _text(scope.get(operand.scope))


def holds(expr: Expr, scope: Mapping[str, object]) -> bool:
    """Whether `expr` is true for `scope` ({"inputs": {...}, "event": ..., "branch": ...})."""
    if isinstance(expr, Compare):
        equal = _operand(expr.left, scope) == _operand(expr.right, scope)
        return equal if expr.op == "==" else not equal
    if isinstance(expr, Truthy):
        return _operand(expr.operand, scope) not in ("", "false", "0")
    if isinstance(expr, Not):
        return not holds(expr.operand, scope)
    if isinstance(expr, And):
        return holds(expr.left, scope) and holds(expr.right, scope)
    if isinstance(expr, Or):
        return holds(expr.left, scope) or holds(expr.right, scope)
    raise TypeError(f"not an expression: {expr!r}")


def expression_holds(text: str, scope: Mapping[str, object]) -> bool:
    """Whether the (validated) expression `text` is true; an empty one is."""
    return not text or holds(expressions.parse(text), scope)
