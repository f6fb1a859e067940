"""The contract's input rules, applied once at the edge to every JSON body, query and path.

* JSON: ``NaN``/``Infinity`` are not JSON (400), nor is nesting deeper than ``MAX_DEPTH``
  (400; checked on the raw bytes before parsing, so 5,000 nested arrays never reach the
  recursive decoder). A number that no storage can hold exactly - an integer beyond
  +-(2**53 - 1) (I-JSON, RFC 7493), or a float that overflowed to infinity (``1e400``) - is a
  422 naming the field.
* Text, wherever it is in a body (values and keys, known fields or not): a C0/C1 control
  character or DEL, or an unpaired UTF-16 surrogate (``"\\ud800"``, which no UTF-8 database
  can store), is a 422 naming the field. Tab, line feed and carriage return are allowed in
  multi-line text only: in every ``crm_kit.web.fields.Text(multiline=False)`` field, and in
  object keys, they are refused too.
* String fields of the route's body schema (``fields.String`` and its kinds, ``Text``
  included) are trimmed before the schema sees them; a required one that is blank after
  trimming is a 422 ("Must not be blank."), whether or not the request is a partial update.

``normalise_body`` does the walk; ``decode_json`` the parsing. The same text rules back
``Text`` (``crm_kit.web.fields``), so a schema loaded outside a request obeys them too, and
the OpenAPI document carries them as ``pattern`` (ECMA-262 syntax, see ``text_pattern``).
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from crm_kit.errors import Invalid
from crm_kit.web.problem import INVALID_FIELDS, Problem, flatten_marshmallow, validation_problem

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON implementation reads exactly
MAX_ERRORS = 20  # a body with thousands of bad strings gets a readable answer

# ECMA-262's \s (WhiteSpace and LineTerminator), so the documented pattern and the trimming agree.
WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000\ufeff"

# Refused everywhere: C0 controls but tab/LF/CR, DEL, C1 controls, and (in a decoded Python
# string) any surrogate code point - a paired one would have been joined by the JSON decoder.
_CONTROLS_MULTILINE = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"
_CONTROLS_LINE = "\\x00-\\x1f\\x7f-\\x9f"
_BAD_MULTILINE = re.compile(f"[{_CONTROLS_MULTILINE}\\ud800-\\udfff]")
_BAD_LINE = re.compile(f"[{_CONTROLS_LINE}\\ud800-\\udfff]")


def text_pattern(*, multiline: bool, not_blank: bool) -> str:
    """The ECMA-262 pattern a text field's value matches (after trimming).

    Written for UTF-16 code units (JSON Schema patterns are ECMA-262, ``u`` flag not assumed):
    any character but the refused controls and surrogates, or a surrogate *pair*. Python's
    ``re`` reads it the same way on code points. ``not_blank`` requires one character that is
    neither white space nor a control.
    """
    controls = _CONTROLS_MULTILINE if multiline else _CONTROLS_LINE
    char = f"(?:[^{controls}\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])"
    if not not_blank:
        return f"^{char}*$"
    solid = f"(?:[^\\s{_CONTROLS_LINE}\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])"
    return f"^{char}*{solid}{char}*$"


def text_error(value: str, *, multiline: bool) -> str | None:
    """Why ``value`` is not acceptable text, or None."""
    found = (_BAD_MULTILINE if multiline else _BAD_LINE).search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"Must not contain an unpaired surrogate (U+{code:04X}): send valid Unicode text."
    if code in (0x09, 0x0A, 0x0D):
        return f"Must be a single line: no tab or line break (U+{code:04X})."
    return f"Must not contain control characters (U+{code:04X})."


def trim(value: str) -> str:
    return value.strip(WHITESPACE)


# -- JSON --------------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def nesting_depth(raw: bytes) -> int:
    """How deeply the JSON text ``raw`` nests arrays and objects (brackets inside strings don't count)."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    steps = array("b", brackets.translate(_BRACKET_STEPS))  # +1 open, -1 close
    return max(accumulate(steps), default=0)


def too_deep(raw: bytes) -> bool:
    """Whether ``raw`` nests deeper than ``MAX_DEPTH`` (cheap when it has few brackets at all)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    return nesting_depth(raw) > MAX_DEPTH


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(raw: bytes) -> Any:
    """``raw`` parsed, or a 400 Problem: not JSON (NaN and Infinity are not), or nested too deeply."""
    if too_deep(raw):
        raise Problem(400, f"The request body nests arrays and objects more than {MAX_DEPTH} levels deep.")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "The request body is not valid JSON.") from None


# -- the walk ----------------------------------------------------------------------------------

class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append({"field": path or "body", "message": message})


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _multiline(field: fields.Field | None) -> bool:
    """Whether a string field may hold tabs and line breaks: ``Text`` says; any other string may."""
    return bool(getattr(field, "multiline", True))


def _fields_by_key(schema: Schema) -> dict[str, fields.Field]:
    return {(f.data_key or name): f for name, f in schema.load_fields.items()}


def _nested_schema(field: fields.Nested) -> Schema | None:
    try:
        schema = field.schema
    except (ValueError, TypeError):  # an unresolvable nested schema: marshmallow will say so
        return None
    return schema if isinstance(schema, Schema) else None


def _walk(value: Any, field: fields.Field | None, path: str, errors: _Errors) -> Any:
    """``value`` with its strings trimmed where a string field takes them; bad values noted.

    A field with ``checked_per_item = True`` (a bulk call's list of items, each loaded on its
    own by the route, so one bad item refuses only itself) is left as it is."""
    if getattr(field, "checked_per_item", False):
        return value
    if isinstance(value, str):
        return _text(value, field, path, errors)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            errors.add(path, f"Out of range: integers are at most {MAX_SAFE_INTEGER} in size.")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            errors.add(path, "Out of range: not a finite number.")
        return value
    if isinstance(value, list):
        if isinstance(field, fields.Nested) and field.many:
            schema = _nested_schema(field)
            return [_object(v, schema, _join(path, i), errors) if isinstance(v, dict) else _walk(v, None, _join(
                path, i), errors) for i, v in enumerate(value)]
        if isinstance(field, fields.Tuple):
            inner = list(field.tuple_fields)
            return [_walk(v, inner[i] if i < len(inner) else None, _join(path, i), errors)
                    for i, v in enumerate(value)]
        item = field.inner if isinstance(field, fields.List) else None
        return [_walk(v, item, _join(path, i), errors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if isinstance(field, fields.Nested) and not field.many:
            return _object(value, _nested_schema(field), path, errors)
        if isinstance(field, fields.Dict):
            return _mapping(value, field.key_field, field.value_field, path, errors)
        return _mapping(value, None, None, path, errors)
    return value


def max_length(field: fields.Field | None) -> int | None:
    """The smallest ``Length(max=...)`` among the field's validators, if any."""
    limits = [v.max for v in getattr(field, "validators", ()) if isinstance(v, validate.Length) and v.max is not None]
    return min(limits) if limits else None


def too_long(value: str, field: fields.Field | None) -> str | None:
    """A maximum length holds for the text as sent, before trimming (as the document's
    ``maxLength`` says): ``"abc "`` is too long for 3 characters."""
    limit = max_length(field)
    if limit is not None and len(value) > limit:
        return f"Longer than maximum length {limit}."
    return None


def _text(value: str, field: fields.Field | None, path: str, errors: _Errors) -> str:
    if isinstance(field, fields.String):
        if too_long(value, field):
            return value  # untrimmed: the schema's Length says it is too long, with the other fields' errors
        value = trim(value) if getattr(field, "trim", True) else value
    problem = text_error(value, multiline=_multiline(field) if isinstance(field, fields.String) else True)
    if problem:
        errors.add(path, problem)
    elif isinstance(field, fields.String) and field.required and not value:
        errors.add(path, "Must not be blank.")
    return value


def _key_ok(key: str, path: str, errors: _Errors) -> bool:
    problem = text_error(key, multiline=False)
    if problem:
        errors.add(path, "Object keys must be single-line text without control characters or unpaired "
                         "surrogates.")
        return False
    return True


def _mapping(value: dict[str, Any], key_field: fields.Field | None, value_field: fields.Field | None, path: str,
             errors: _Errors) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not _key_ok(key, path, errors):
            continue
        name = trim(key) if isinstance(key_field, fields.String) else key
        out[name] = _walk(item, value_field, _join(path, name), errors)
    return out


def _object(value: dict[str, Any], schema: Schema | None, path: str, errors: _Errors) -> dict[str, Any]:
    if schema is None:
        return _mapping(value, None, None, path, errors)
    known = _fields_by_key(schema)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not _key_ok(key, path, errors):
            continue
        out[key] = _walk(item, known.get(key), _join(path, key), errors)
    return out


def check_body(data: Any, schema: Schema | None) -> tuple[Any, list[dict[str, str]]]:
    """``data`` (parsed JSON) trimmed as the module says for ``schema``, and what breaks its rules
    (``[{"field", "message"}]``; empty when nothing does)."""
    errors = _Errors()
    out = _object(data, schema, "", errors) if isinstance(data, dict) else _walk(data, None, "", errors)
    return out, errors.items


def normalise_body(data: Any, schema: Schema | None) -> Any:
    """``data`` checked and trimmed (``check_body``); a 422 naming each offending field otherwise."""
    out, errors = check_body(data, schema)
    if errors:
        raise validation_problem(errors)
    return out


def load_body(data: Any, schema: Schema) -> Any:
    """``schema.load`` of ``data`` after ``check_body``: one refusal (``Invalid``, a 422 at the edge)
    lists what breaks the text and number rules and what the schema refuses, each field once. A
    request's body and each item of a bulk create (``crm_kit.bulk.load_item``) load the same way."""
    out, errors = check_body(data, schema)
    try:
        loaded = schema.load(out)
    except ValidationError as exc:
        if not errors:
            raise
        named = {e["field"] for e in errors}
        errors += [e for e in flatten_marshmallow(exc.messages) if e["field"] not in named]
    if errors:
        raise Invalid(INVALID_FIELDS, errors=errors[:MAX_ERRORS])
    return loaded


def check_texts(values: Mapping[str, Any] | Iterable[tuple[str, Any]], *, status: int = 422) -> None:
    """Query parameters or path variables (a mapping or ``(name, value)`` pairs): a control
    character or an unpaired surrogate in any of them is refused.

    ``status`` 422 names each parameter; 404 is for path variables (no such resource can exist).
    """
    errors = _Errors()
    for name, value in (values.items() if isinstance(values, Mapping) else values):
        problem = text_error(value, multiline=False) if isinstance(value, str) else None
        if problem:
            errors.add(name, problem)
    if not errors.items:
        return
    if status == 404:
        raise Problem(404, "There is no such resource: the URL holds a control character.")
    raise validation_problem(errors.items, "The request has invalid query parameters.")


# -- the rules in the OpenAPI document ---------------------------------------------------------

_OWN_RULES = (validate.Regexp, validate.OneOf, validate.Equal)


def document_text_rules(schema: Schema) -> Schema:
    """Give every string field of a body schema the text rules as its ``pattern``.

    The edge enforces them on every string (``normalise_body``); this makes the OpenAPI
    document say so, field by field: ``pattern`` in ECMA-262 syntax (multi-line unless the
    field is a single-line ``Text``; not blank when required). A field with its own pattern,
    choices or format (``Email``, ``Url``) keeps them: they are stricter. Nested schemas are
    documented too (their fields' metadata on the instance this field loads with).
    Changes ``schema``'s field instances only (marshmallow copies declared fields per schema
    instance; a nested schema's instance is cached on its field), never the classes.
    """
    _document(schema, set())
    return schema


def _document(schema: Schema, seen: set[int]) -> None:
    if id(schema) in seen:
        return
    seen.add(id(schema))
    for field in schema.fields.values():
        if not field.dump_only:
            _document_field(field, seen)


def _document_field(field: fields.Field, seen: set[int]) -> None:
    if isinstance(field, fields.Nested):
        nested = _nested_schema(field)
        if nested is not None:
            _document(nested, seen)  # the instance the field loads with, which apispec documents
    elif isinstance(field, fields.List):
        _document_field(field.inner, seen)
    elif isinstance(field, fields.Tuple):
        for inner in field.tuple_fields:
            _document_field(inner, seen)
    elif isinstance(field, fields.Dict):
        if field.value_field is not None:
            _document_field(field.value_field, seen)
    elif isinstance(field, fields.String) and not isinstance(field, fields.Email | fields.Url):
        if "pattern" in field.metadata or any(isinstance(v, _OWN_RULES) for v in field.validators):
            return
        field.metadata = {**field.metadata, "pattern": text_pattern(multiline=_multiline(field),
                                                                    not_blank=field.required)}
