"""The ``filter`` and ``order_by`` query parameters of ``GET /v1/{records}`` (after Google AIP-160 and AIP-132).

``parse_filter`` turns text such as ``stage_id = "s1" AND (priority_id = "p1" OR created_at >= "2026-01-01T00:00:00Z")``
into a SQLAlchemy boolean clause; every user value reaches the database as a bound parameter, never as SQL text.
Errors are ``FilterError`` with the offending position, so the API can answer 422 with a pointer.

Comparisons are two-valued on purpose: a record whose field is null does not match ``f = x`` or ``f < x`` but
does match ``f != x``, so ``NOT f = x`` means the same as ``f != x`` (plain SQL would drop the null rows from both).
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from sqlalchemy import Boolean, String, and_, literal, not_, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "MAX_TERMS", "FilterError", "FilterField", "parse_filter", "parse_order_by",
           "record_fields"]

MAX_LENGTH = 2000  # characters of filter / order_by text
MAX_TERMS = 50  # comparisons in one filter
MAX_DEPTH = 20  # nesting: each pair of parentheses and each NOT adds a level

# Keywords get priority 2 and a word boundary so that they win over FIELD ("and") without eating fields
# that merely start with one ("android", "order"). and/or lists stay flat, so only parentheses and NOT nest.
GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> not_
         | atom
?atom: comparison
     | "(" or_expr ")" -> group
comparison: FIELD OP value
?value: STRING | NUMBER | TRUE | FALSE | NULL

_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
NULL.2: /null\b/i
FIELD: /[a-z_][a-z0-9_.]*/
OP: /!=|<=|>=|=|<|>/
STRING: /"(?:[^"\\]|\\.)*"/
NUMBER: /-?\d+(?:\.\d+)?/
%ignore /\s+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True)

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EQUALITY_ONLY = {"id", "bool", "id_list"}
_NEEDS = {  # completes "'<field>' needs ..."
    "id": 'a quoted id such as "3f2c9a"', "id_list": 'a quoted id such as "3f2c9a"',
    "string": 'a quoted string such as "Acme"', "datetime": 'an RFC 3339 time such as "2026-01-01T00:00:00Z"',
    "date": 'a date such as "2026-01-01"', "number": "a number such as 1500 or 12.50",
    "integer": "a whole number such as 42", "bool": "true or false"}
_VALUE_TERMINALS = {"STRING", "NUMBER", "TRUE", "FALSE", "NULL"}
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_.]*")


class FilterError(ValueError):
    """Bad ``filter``/``order_by`` text; ``position`` is a 0-based offset, ``line``/``column`` are 1-based."""

    def __init__(self, message: str, text: str = "", position: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.position = max(0, min(position, len(text)))
        self.line = text.count("\n", 0, self.position) + 1
        self.column = self.position - (text.rfind("\n", 0, self.position) + 1) + 1

    def pointer(self, width: int = 60) -> str:
        """The error's line (a window of ``width`` characters on long lines) and a caret under the position."""
        start = self.text.rfind("\n", 0, self.position) + 1
        end = self.text.find("\n", self.position)
        line = self.text[start:end if end >= 0 else len(self.text)].replace("\t", " ")
        col = self.position - start
        lo = max(0, min(col - width // 2, len(line) - width))
        hi = min(len(line), lo + width)
        head, tail = ("..." if lo else ""), ("..." if hi < len(line) else "")
        return f"{head}{line[lo:hi]}{tail}\n{' ' * (len(head) + col - lo)}^"


@dataclass(frozen=True)
class FilterField:
    """A field a filter may name: the column it reads and the kind of value it takes.

    ``type`` is one of id, string, datetime, date, number, integer, bool, id_list (a JSON list of ids, where
    ``=`` means "contains"). ``build(op, value)``, when given, makes the clause instead of the default
    comparison; it gets the operator and the already checked value (``None`` for null).
    """

    column: ColumnElement[Any] | None
    type: str
    build: Callable[[str, Any], ColumnElement[bool]] | None = None

    def __post_init__(self) -> None:
        if self.type not in _NEEDS:
            raise ValueError(f"unknown filter field type {self.type!r}")
        if self.column is None and self.build is None:
            raise ValueError("a FilterField needs a column or a build function")


class _JsonListHas(ColumnElement[bool]):
    """True when the JSON list in ``column`` has the string ``value`` (a custom construct: the SQL differs)."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("value", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any], value: str) -> None:
        self.column = column
        self.value = literal(value, String())


@compiles(_JsonListHas)
def _json_list_has_default(element: _JsonListHas, compiler: Any, **kw: Any) -> str:  # SQLite's JSON1
    return (f"EXISTS (SELECT 1 FROM json_each({compiler.process(element.column, **kw)}) "
            f"WHERE json_each.value = {compiler.process(element.value, **kw)})")


@compiles(_JsonListHas, "postgresql")
def _json_list_has_pg(element: _JsonListHas, compiler: Any, **kw: Any) -> str:
    # The cast to text gives jsonb_build_array a type for the parameter, which psycopg sends untyped.
    return (f"(CAST({compiler.process(element.column, **kw)} AS JSONB) "
            f"@> jsonb_build_array(CAST({compiler.process(element.value, **kw)} AS TEXT)))")


def record_fields(table: Any, *, link_field: str | None, money: bool, group_id: FilterField) -> dict[str, FilterField]:
    """The fields a filter on leads or opportunities may name, over ``table``'s columns of the same
    names (the records' own table, or another service's copy of them); ``group_id`` (membership)
    is given, as each table keeps groups its own way."""
    ids = ["stage_id", "stage_group_id", "owner_id", "office_id", "source_id", "priority_id", "category_id",
           "procedure_id", "company_id", "contact_id"] + ([link_field] if link_field else [])
    fields: dict[str, FilterField] = {name: FilterField(table.c[name], "id") for name in ids}
    fields.update(
        title=FilterField(table.c.title, "string"),
        created_at=FilterField(table.c.created_at, "datetime"),
        modified_at=FilterField(table.c.modified_at, "datetime"),
        stage_changed_at=FilterField(table.c.stage_changed_at, "datetime"),
        group_id=group_id,
        attribute_ids=FilterField(table.c.attribute_ids, "id_list"),
    )
    if money:
        fields.update(amount=FilterField(table.c.amount, "number"),
                      probability=FilterField(table.c.probability, "integer"),
                      currency=FilterField(table.c.currency, "string"),
                      expected_close_date=FilterField(table.c.expected_close_date, "date"))
    return fields


def parse_filter(text: str, fields: Mapping[str, FilterField]) -> ColumnElement[bool]:
    """The clause for the filter ``text`` over ``fields`` (blank text matches everything); raises FilterError."""
    if len(text) > MAX_LENGTH:
        raise FilterError(f"The filter is too long ({len(text)} characters; at most {MAX_LENGTH})", text, MAX_LENGTH)
    if not text.strip():
        return true()
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    _check_limits(tree, text)
    return _build(tree, text, fields)


def parse_order_by(text: str, allowed: Mapping[str, ColumnElement[Any]]) -> list[tuple[str, ColumnElement[Any], bool]]:
    """``field [asc|desc], ...`` as ``(name, column, descending)``; raises FilterError."""
    if len(text) > MAX_LENGTH:
        raise FilterError(f"order_by is too long ({len(text)} characters; at most {MAX_LENGTH})", text, MAX_LENGTH)
    if not text.strip():
        return []
    result: list[tuple[str, ColumnElement[Any], bool]] = []
    start = 0
    for part in text.split(","):
        words = list(re.finditer(r"\S+", part))
        if not words:
            raise FilterError(f"Expected a field name at {_where(text, start)}", text, start)
        name, at = words[0].group(), start + words[0].start()
        if not _FIELD_NAME.fullmatch(name) or name not in allowed:
            raise FilterError(f"Cannot order by '{name}'; allowed: {', '.join(sorted(allowed))}", text, at)
        if any(seen == name for seen, _, _ in result):
            raise FilterError(f"'{name}' appears twice in order_by", text, at)
        if len(words) > 1 and words[1].group().lower() not in ("asc", "desc"):
            at = start + words[1].start()
            raise FilterError(f"Expected asc or desc after '{name}' at {_where(text, at)}", text, at)
        if len(words) > 2:
            at = start + words[2].start()
            raise FilterError(f"Expected ',' or the end of order_by at {_where(text, at)}", text, at)
        result.append((name, allowed[name], len(words) > 1 and words[1].group().lower() == "desc"))
        start += len(part) + 1
    return result


def _where(text: str, position: int) -> str:
    err = FilterError("", text, position)
    return f"column {err.column}" if "\n" not in text else f"line {err.line}, column {err.column}"


def _open_parens(text: str, end: int) -> list[int]:
    """Positions of the '(' still open at ``end`` (parentheses inside strings do not count)."""
    stack: list[int] = []
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[()]', text[:end]):
        if m.group() == "(":
            stack.append(m.start())
        elif m.group() == ")" and stack:
            stack.pop()
    return stack


def _syntax_error(text: str, exc: UnexpectedInput) -> FilterError:
    """A human message for lark's error: what was expected, after what, and what came instead."""
    if isinstance(exc, UnexpectedCharacters) or not isinstance(exc, UnexpectedToken):
        pos = max(0, exc.pos_in_stream or 0)
        what = "Unterminated string" if text[pos:pos + 1] == '"' else f"Unexpected character {text[pos:pos + 1]!r}"
        return FilterError(f"{what} at {_where(text, pos)}", text, pos)
    tok, expected = exc.token, set(exc.expected)
    at_end = tok.type == "$END"
    pos = len(text.rstrip()) if at_end else tok.start_pos or 0
    before = text[:pos]
    if expected & _VALUE_TERMINALS:
        op = re.search(r"(!=|<=|>=|=|<|>)\s*$", before)
        what = "Expected a value" + (f" after '{op.group(1)}'" if op else "")
    elif "OP" in expected:
        name = re.search(r"([a-z_][a-z0-9_.]*)\s*$", before)
        what = "Expected an operator (=, !=, <, <=, >, >=)" + (f" after '{name.group(1)}'" if name else "")
    elif "FIELD" in expected:
        what = "Expected a field name, NOT or '('"
    elif tok.type == "RPAR":
        return FilterError(f"Unmatched ')' at {_where(text, pos)}", text, pos)
    elif (open_at := _open_parens(text, pos)) and at_end:
        return FilterError(f"Missing ')' to close the '(' at {_where(text, open_at[-1])}", text, pos)
    else:
        what = "Expected AND, OR" + (" or ')'" if open_at else " or the end of the filter")
    found = "the end of the filter" if at_end else repr(str(tok)[:20])
    hint = "; text values need double quotes" if tok.type == "FIELD" and expected & _VALUE_TERMINALS else ""
    return FilterError(f"{what} at {_where(text, pos)}, found {found}{hint}", text, pos)


def _check_limits(tree: Tree[Token], text: str) -> None:
    """Depth and size limits, walked without recursion so that a deep tree cannot exhaust the stack first."""
    terms = 0
    stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in ("group", "not_"):
            depth += 1
            if depth > MAX_DEPTH:
                raise FilterError(f"The filter nests too deeply (parentheses and NOT; at most {MAX_DEPTH} levels)",
                                  text, node.meta.start_pos)
        elif node.data == "comparison":
            terms += 1
            if terms > MAX_TERMS:
                raise FilterError(f"The filter has too many comparisons (at most {MAX_TERMS})",
                                  text, node.meta.start_pos)
            continue
        # Reversed so that the leftmost child is visited first and errors point at the first offender.
        stack.extend((child, depth) for child in reversed(node.children) if isinstance(child, Tree))


def _build(node: Tree[Token], text: str, fields: Mapping[str, FilterField]) -> ColumnElement[bool]:
    children = [c for c in node.children if isinstance(c, Tree)]
    if node.data == "or_expr":
        return or_(*(_build(c, text, fields) for c in children))
    if node.data == "and_expr":
        return and_(*(_build(c, text, fields) for c in children))
    if node.data == "not_":
        return not_(_build(children[0], text, fields))
    if node.data == "group":  # and_/or_ parenthesise the SQL themselves
        return _build(children[0], text, fields)
    return _comparison(node, text, fields)


def _comparison(node: Tree[Token], text: str, fields: Mapping[str, FilterField]) -> ColumnElement[bool]:
    name_tok, op_tok, value_tok = (c for c in node.children if isinstance(c, Token))
    name, op = str(name_tok), str(op_tok)
    field = fields.get(name)
    if field is None:
        allowed = ", ".join(sorted(fields))
        raise FilterError(f"Unknown field '{name}'; allowed: {allowed}", text, name_tok.start_pos or 0)
    if op not in ("=", "!=") and (value_tok.type == "NULL" or field.type in _EQUALITY_ONLY):
        subject = "null" if value_tok.type == "NULL" else f"'{name}'"
        raise FilterError(f"{subject} can only be compared with = or !=, not '{op}'", text, op_tok.start_pos or 0)
    value = None if value_tok.type == "NULL" else _value(name, field.type, value_tok, text)
    if field.build is not None:
        return field.build(op, value)
    column = field.column
    assert column is not None  # __post_init__ guarantees a column when there is no build
    if value is None:
        return column.is_(None) if op == "=" else column.is_not(None)
    if field.type == "id_list":
        clause: ColumnElement[bool] = _JsonListHas(column, value)
        op, clause = ("=", clause) if op == "=" else ("!=", not_(clause))
    else:
        clause = _OPS[op](column, literal(value, column.type))
    if not getattr(column, "nullable", True):
        return clause
    # Two-valued logic (see the module docstring): null rows fail =, <, ... and pass !=, also under NOT.
    return or_(column.is_(None), clause) if op == "!=" else and_(column.is_not(None), clause)


def _value(name: str, kind: str, tok: Token, text: str) -> Any:
    """The token as a Python value for a field of type ``kind``, or FilterError pointing at it."""
    raw = str(tok)
    if tok.type == "STRING":
        for m in re.finditer(r"\\(.)", raw[1:-1], re.S):
            if m.group(1) not in '"\\':
                raise FilterError(f"Unknown escape '\\{m.group(1)}' in a string; only \\\" and \\\\ are allowed",
                                  text, (tok.start_pos or 0) + 1 + m.start())
        s = re.sub(r'\\(["\\])', r"\1", raw[1:-1])
        if kind in ("id", "string", "id_list"):
            return s
        try:
            if kind == "datetime" and _RFC3339.fullmatch(s):
                return dt.datetime.fromisoformat(s.upper()).astimezone(dt.UTC)  # SQLite keeps no offset: UTC
            if kind == "date" and _DATE.fullmatch(s):
                return dt.date.fromisoformat(s)
        except ValueError:
            pass  # well formed but impossible, e.g. February 30th
    elif tok.type == "NUMBER" and kind == "number":
        return Decimal(raw)
    elif tok.type == "NUMBER" and kind == "integer" and "." not in raw:
        return int(raw)
    elif tok.type in ("TRUE", "FALSE") and kind == "bool":
        return tok.type == "TRUE"
    raise FilterError(f"'{name}' needs {_NEEDS[kind]}", text, tok.start_pos or 0)
