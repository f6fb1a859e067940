"""Answers serialised fast: a response schema's ``dump`` compiled once into plain functions.

``Schema.dump`` finds every field's value through three generic accessors and calls two
methods per field and value; on a list page (50 records of 25 fields) that was most of the
request's CPU time. ``dump(schema, obj)`` gives exactly what ``schema.dump(obj)`` gives - the
same keys in the same order, the same values - from a plan made once per schema: per field
its key, where its value comes from, and a converter (the field's own ``_serialize``, or
for the common field types the same rule written out: a ``String`` passes a ``str`` through,
an ``Integer`` an ``int``, a ``Nested`` or ``List`` uses the plan of what it holds).

Whatever the plan does not know is left to marshmallow as it is: a schema with dump hooks
(``pre_dump``/``post_dump``) or its own ``get_attribute`` is dumped by ``Schema.dump``, and
a field with its own ``serialize``/``get_value``, a dotted ``attribute`` or no attribute
(``Method``, ``Function``, ``Constant``) by its ``serialize``. Output is never validated
(nor is it by marshmallow): what goes out was checked when it came in.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Lock
from typing import Any
from weakref import WeakKeyDictionary

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from marshmallow.utils import ensure_text_type

Convert = Callable[[Any, Any], Any]  # (value, the object it came from) -> its JSON-able form
Dump = Callable[[Any, bool], Any]  # (object or objects, many) -> dumped

_plans: WeakKeyDictionary[Schema, Dump] = WeakKeyDictionary()
_lock = Lock()


def dump(schema: Schema, obj: Any, *, many: bool | None = None) -> Any:
    """``schema.dump(obj, many=many)``, from the schema's compiled plan."""
    return dumper(schema)(obj, schema.many if many is None else bool(many))


def dumper(schema: Schema) -> Dump:
    """The compiled dump of ``schema`` (made on first use, then kept as long as the schema)."""
    found = _plans.get(schema)
    if found is None:
        found = _compile(schema)
        with _lock:
            _plans[schema] = found
    return found


def _get_value_for_key(obj: Any, key: str) -> Any:
    """marshmallow's accessor for one key (``utils._get_value_for_key``), for objects that are not dicts."""
    if not hasattr(obj, "__getitem__"):
        return getattr(obj, key, missing)
    try:
        return obj[key]
    except (KeyError, IndexError, TypeError, AttributeError):
        return getattr(obj, key, missing)


def _compile(schema: Schema) -> Dump:
    if (schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP]
            or type(schema).get_attribute is not Schema.get_attribute
            or type(schema)._serialize is not Schema._serialize):
        def by_marshmallow(obj: Any, many: bool) -> Any:
            return schema.dump(obj, many=many)
        return by_marshmallow

    dict_class = schema.dict_class
    # (key, source, field, convert, passes): source None = the field serialises itself (field.serialize);
    # a value whose type is in ``passes`` is what the field would make of it (a str for a String).
    plan: list[tuple[str, str | None, fields.Field, Convert, tuple[type, ...]]] = []
    for attr_name, field in schema.dump_fields.items():
        key = field.data_key if field.data_key is not None else attr_name
        source = attr_name if field.attribute is None else field.attribute
        cls = type(field)
        if (not field._CHECK_ATTRIBUTE or "." in source or cls.serialize is not fields.Field.serialize
                or cls.get_value is not fields.Field.get_value):
            plan.append((key, None, field, _by_field(field, attr_name, schema), ()))
        else:
            plan.append((key, source, field, *_converter(field, attr_name)))

    def one(obj: Any) -> Any:
        out = dict_class()
        is_dict = type(obj) is dict
        for key, source, field, convert, passes in plan:
            if source is None:
                value = convert(None, obj)
                if value is not missing:
                    out[key] = value
                continue
            if is_dict:
                value = obj[source] if source in obj else getattr(obj, source, missing)
            else:
                value = _get_value_for_key(obj, source)
            if value is missing:
                default = field.dump_default
                value = default() if callable(default) else default
                if value is missing:
                    continue
            out[key] = value if type(value) in passes else convert(value, obj)
        return out

    def compiled(obj: Any, many: bool) -> Any:
        if many and obj is not None:
            return [one(item) for item in obj]
        return one(obj)

    return compiled


def _by_field(field: fields.Field, attr_name: str, schema: Schema) -> Convert:
    """The field's own ``serialize`` (it finds its value itself)."""
    accessor = schema.get_attribute

    def serialize(_value: Any, obj: Any) -> Any:
        return field.serialize(attr_name, obj, accessor=accessor)
    return serialize


_NONE = type(None)


def _converter(field: fields.Field, attr: str) -> tuple[Convert, tuple[type, ...]]:
    """What ``field._serialize(value, attr, obj)`` does, as directly as the field's type allows, and
    the types of value it returns unchanged."""
    cls = type(field)
    own = cls._serialize
    if own is fields.String._serialize:
        def string(value: Any, obj: Any) -> Any:
            return None if value is None else ensure_text_type(value)
        return string, (str, _NONE)
    if (own is fields.Number._serialize and isinstance(field, fields.Integer) and not field.as_string
            and getattr(cls, "_format_num", None) is fields.Number._format_num and field.num_type is int):
        def integer(value: Any, obj: Any) -> Any:
            return None if value is None else int(value)
        return integer, (int, _NONE)
    if own is fields.Nested._serialize:
        nested = field  # type: ignore[assignment]
        schema = nested.schema  # type: ignore[attr-defined]
        many = bool(schema.many or nested.many)  # type: ignore[attr-defined]
        inner_dump = dumper(schema)

        def nested_dump(value: Any, obj: Any) -> Any:
            return None if value is None else inner_dump(value, many)
        return nested_dump, (_NONE,)
    if own is fields.List._serialize:
        inner, inner_passes = _converter(field.inner, attr)  # type: ignore[attr-defined]

        def each(value: Any, obj: Any) -> Any:
            if value is None:
                return None
            return [item if type(item) in inner_passes else inner(item, obj) for item in value]
        return each, (_NONE,)
    serialize = field._serialize

    def by_type(value: Any, obj: Any) -> Any:
        return serialize(value, attr, obj)
    return by_type, ()
