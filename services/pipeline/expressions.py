"""The condition expressions and placeholders of the pipeline model.

A condition's expression is a small language over what a run knows before it starts:

    expression := or ;  or := and ('||' and)* ;  and := unary ('&&' unary)*
    unary := '!' unary | '(' or ')' | term
    term := operand [('==' | '!=') operand] ;  operand := reference | 'string' | true | false
    reference := inputs.<name> | event | branch

Placeholders `${{ matrix.<axis> }}` and `${{ inputs.<name> }}` may appear in commands, versions,
env values and concurrency groups. Both are parsed here once, so that validation checks what
export renders, and every target renders the same tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PLACEHOLDER = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_REFERENCE = re.compile(r"(matrix|inputs)\.([A-Za-z_][A-Za-z0-9_]{0,63})")
EVENTS = ("push", "pull_request", "schedule", "manual")
MAX_EXPRESSION = 1024


class ExpressionError(ValueError):
    """The expression does not parse; the message says where."""


@dataclass(frozen=True)
class Ref:
    """`inputs.<name>`, `event` or `branch`."""

    scope: str  # "inputs", "event" or "branch"
    name: str = ""


@dataclass(frozen=True)
class Literal:
    value: str | bool


@dataclass(frozen=True)
class Compare:
    left: Ref | Literal
    op: str  # "==" or "!="
    right: Ref | Literal


@dataclass(frozen=True)
class Truthy:
    """A bare operand used as a condition (a boolean input, `true`)."""

    operand: Ref | Literal


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


Expr = Compare | Truthy | Not | And | Or

_TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|&&|\|\||!|\(|\))|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None:
            raise ExpressionError(f"unexpected {text[at : at + 10].strip()!r} at character {at + 1}")
        at = match.end()
        if match.group("op") is not None:
            found.append(("op", match.group("op")))
        elif match.group("sq") is not None or match.group("dq") is not None:
            found.append(("str", match.group("sq") if match.group("sq") is not None else match.group("dq")))
        else:
            found.append(("word", match.group("word")))
    return found


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExpressionError("the expression ends too early")
        self.at += 1
        return token

    def parse(self) -> Expr:
        expr = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} after a complete expression")  # type: ignore[index]
        return expr

    def or_(self) -> Expr:
        expr = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            expr = Or(expr, self.and_())
        return expr

    def and_(self) -> Expr:
        expr = self.unary()
        while self.peek() == ("op", "&&"):
            self.take()
            expr = And(expr, self.unary())
        return expr

    def unary(self) -> Expr:
        token = self.peek()
        if token == ("op", "!"):
            self.take()
            return Not(self.unary())
        if token == ("op", "("):
            self.take()
            expr = self.or_()
            if self.take() != ("op", ")"):
                raise ExpressionError("a '(' is not closed")
            return expr
        left = self.operand()
        following = self.peek()
        if following is not None and following[0] == "op" and following[1] in ("==", "!="):
            self.take()
            return Compare(left, following[1], self.operand())
        return Truthy(left)

    def operand(self) -> Ref | Literal:
        kind, value = self.take()
        if kind == "str":
            return Literal(value)
        if kind != "word":
            raise ExpressionError(f"expected a value, found {value!r}")
        if value in ("true", "false"):
            return Literal(value == "true")
        if value in ("event", "branch"):
            return Ref(value)
        scope, _, name = value.partition(".")
        if scope == "inputs" and NAME.fullmatch(name):
            return Ref("inputs", name)
        raise ExpressionError(
            f"{value!r} is not inputs.<name>, event, branch, a quoted string, true or false"
        )


def parse(text: str) -> Expr:
    """The expression's tree; ExpressionError says what is wrong."""
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"longer than {MAX_EXPRESSION} characters")
    tokens = _tokens(text)
    if not tokens:
        raise ExpressionError("is empty")
    return _Parser(tokens).parse()


def references(expr: Expr) -> list[Ref]:
    """Every reference in the tree, in order."""
    if isinstance(expr, Compare):
        return [o for o in (expr.left, expr.right) if isinstance(o, Ref)]
    if isinstance(expr, Truthy):
        return [expr.operand] if isinstance(expr.operand, Ref) else []
    if isinstance(expr, Not):
        return references(expr.operand)
    return [*references(expr.left), *references(expr.right)]


def literals_compared_with_event(expr: Expr) -> list[str]:
    """The strings `event` is compared with (each must be one of EVENTS)."""
    if isinstance(expr, Compare):
        sides = (expr.left, expr.right)
        if any(isinstance(s, Ref) and s.scope == "event" for s in sides):
            return [s.value for s in sides if isinstance(s, Literal) and isinstance(s.value, str)]
        return []
    if isinstance(expr, Truthy):
        return []
    if isinstance(expr, Not):
        return literals_compared_with_event(expr.operand)
    return [*literals_compared_with_event(expr.left), *literals_compared_with_event(expr.right)]


def negation_normal_form(expr: Expr, negate: bool = False) -> Expr:
    """The same condition with every `!` pushed onto a comparison (De Morgan): for targets
    whose rules have `!=` but no unary not."""
    if isinstance(expr, Not):
        return negation_normal_form(expr.operand, not negate)
    if isinstance(expr, And | Or):
        left, right = negation_normal_form(expr.left, negate), negation_normal_form(expr.right, negate)
        flip = negate
        return (Or if (isinstance(expr, And) == flip) else And)(left, right)
    if isinstance(expr, Compare):
        return Compare(expr.left, {"==": "!=", "!=": "=="}[expr.op] if negate else expr.op, expr.right)
    return Not(expr) if negate else expr


@dataclass(frozen=True)
class Placeholder:
    """One `${{ ... }}` in a text: its scope (`matrix`, `inputs`) and name, or what is wrong."""

    text: str
    scope: str
    name: str


def placeholders(text: str) -> list[Placeholder]:
    """Every `${{ ... }}` in `text`; scope is empty for one that is neither matrix.X nor inputs.X."""
    found = []
    for match in PLACEHOLDER.finditer(text):
        inner = match.group(1)
        reference = _REFERENCE.fullmatch(inner)
        found.append(
            Placeholder(match.group(0), reference.group(1), reference.group(2))
            if reference
            else Placeholder(match.group(0), "", inner)
        )
    return found


def substitute(text: str, scope_format: dict[str, str]) -> str:
    """`text` with each placeholder rendered by `scope_format[scope].format(name=...)`."""

    def replace(match: re.Match[str]) -> str:
        reference = _REFERENCE.fullmatch(match.group(1))
        if reference is None:
            return match.group(0)
        return scope_format[reference.group(1)].format(name=reference.group(2))

    return PLACEHOLDER.sub(replace, text)
