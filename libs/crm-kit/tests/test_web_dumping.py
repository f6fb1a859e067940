"""The compiled dump (crm_kit.web.dumping) gives what marshmallow's Schema.dump gives: the same
JSON, byte for byte, for every field type, for missing and null values, and for every response
schema the services declare."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
from typing import Any

import pytest
from marshmallow import Schema, fields, post_dump, pre_dump

from crm_kit.service import find_service, installed_services
from crm_kit.settings import load_settings
from crm_kit.web.dumping import dump, dumper
from crm_kit.web.fields import Currency, Money, Text, Timestamp


def same(schema: Schema, obj: Any, many: bool | None = None) -> None:
    expected = json.dumps(schema.dump(obj, many=many), default=str)
    assert json.dumps(dump(schema, obj, many=many), default=str) == expected


class Stage(Schema):
    id = fields.String()
    name = fields.String()
    is_end = fields.Boolean()


class Thing(Schema):
    id = fields.String()
    title = Text()
    count = fields.Integer()
    as_text = fields.Integer(as_string=True)
    ratio = fields.Float()
    amount = Money()
    price = fields.Decimal(as_string=True)
    currency = Currency()
    at = Timestamp()
    day = fields.Date()
    moment = fields.DateTime()
    flag = fields.Boolean()
    tags = fields.List(fields.String())
    stamps = fields.List(Timestamp())
    stage = fields.Nested(Stage)
    stages = fields.Nested(Stage, many=True)
    only_name = fields.Nested(Stage, only=("name",))
    mapping = fields.Dict(keys=fields.String(), values=fields.Integer())
    raw = fields.Raw()
    renamed = fields.String(data_key="renamedKey")
    elsewhere = fields.String(attribute="source_of_elsewhere")
    dotted = fields.String(attribute="stage.name")
    fallback = fields.String(dump_default="none given")
    computed = fields.Method("compute")
    function = fields.Function(lambda obj: "f")
    constant = fields.Constant(7)
    items = fields.String()  # a dict's method when missing from a dict, as marshmallow finds it

    def compute(self, obj: Any) -> str:
        return "computed"


AT = dt.datetime(2026, 12, 6, 13, 42, 47, 284507, tzinfo=dt.UTC)


def full_thing() -> dict[str, Any]:
    return {"id": "t1", "title": "A thing", "count": 3, "as_text": 4, "ratio": 0.5, "amount": decimal.Decimal("2.50"),
            "price": decimal.Decimal("1.10"), "currency": "EUR", "at": AT, "day": dt.date(2026, 1, 2),
            "moment": AT.replace(tzinfo=None), "flag": True, "tags": ["a", "b"], "stamps": [AT, None],
            "stage": {"id": "s", "name": "New", "is_end": 0}, "stages": [{"id": "x", "name": "X", "is_end": True}],
            "only_name": {"id": "s", "name": "Only"}, "mapping": {"a": 1}, "raw": {"any": [1, 2]},
            "renamed": "r", "source_of_elsewhere": "there", "fallback": None, "items": "kept"}


@pytest.mark.parametrize("obj", [
    full_thing(),
    {},  # every field missing: defaults, constants, a dict's own attributes
    {k: None for k in full_thing()},
    {"id": 5, "count": "12", "flag": "yes", "title": b"bytes", "tags": [1, None], "at": AT.replace(tzinfo=None)},
], ids=["full", "empty", "nulls", "converted"])
def test_one_object_as_marshmallow_dumps_it(obj):
    same(Thing(), obj)


def test_objects_that_are_not_dicts():
    class Row:
        def __init__(self, **values: Any) -> None:
            self.__dict__.update(values)

    same(Thing(), Row(**full_thing()))
    same(Thing(), Row(id="only an id"))
    same(Thing(), [full_thing(), Row(**full_thing()), {}], many=True)
    same(Thing(), None)
    same(Thing(many=True), [full_thing()])


def test_schemas_with_hooks_are_left_to_marshmallow():
    class Hooked(Schema):
        name = fields.String()

        @pre_dump
        def upper(self, data: Any, **_: Any) -> Any:
            return {"name": data["name"].upper()}

        @post_dump
        def mark(self, data: Any, **_: Any) -> Any:
            return {**data, "hooked": True}

    schema = Hooked()
    assert dump(schema, {"name": "x"}) == {"name": "X", "hooked": True}
    same(schema, [{"name": "a"}, {"name": "b"}], many=True)


def test_the_plan_is_made_once_per_schema():
    schema = Thing()
    assert dumper(schema) is dumper(schema)
    assert dumper(Thing()) is not dumper(schema)


# -- every response schema the services declare, on generated values ------------------------------------------

_BUILD_ENV = {"CRM_JWT_SECRET": "only-to-build-the-apps-long-enough-for-hs256",
              "CRM_WEBHOOK_SECRETS_KEY": "only-to-build-the-apps", "CRM_DATABASE_URL": "sqlite://",
              "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9", "CRM_LOG_FORMAT": "text"}


def _response_schemas() -> list[tuple[str, Schema]]:
    found: dict[int, tuple[str, Schema]] = {}
    for name in sorted(installed_services()):
        spec = find_service(name)
        if spec.role != "domain":
            continue  # the gateway's and the console's few answers are not declared routes of theirs
        app = spec.build_app(load_settings(spec.role, {"CRM_SERVICE_NAME": name, **_BUILD_ENV}))
        for route in app.extensions.get("crm_routes", []):
            if route.response is not None:
                found.setdefault(id(route.response), (f"{name} {route.method} {route.rule}", route.response))
    return list(found.values())


def _value(field: fields.Field, rng: random.Random, depth: int) -> Any:
    if rng.random() < 0.15:
        return None
    if isinstance(field, fields.Nested):
        sample = _sample(field.schema, rng, depth + 1)
        return [sample, _sample(field.schema, rng, depth + 1)] if (field.many or field.schema.many) else sample
    if isinstance(field, fields.List):
        return [_value(field.inner, rng, depth) for _ in range(rng.randint(0, 3))]
    if isinstance(field, fields.DateTime):
        return AT + dt.timedelta(seconds=rng.randint(0, 10**6))
    if isinstance(field, fields.Date):
        return dt.date(2026, 1, 1) + dt.timedelta(days=rng.randint(0, 400))
    if isinstance(field, fields.Boolean):
        return rng.choice([True, False, 1, 0])
    if isinstance(field, fields.Integer):
        return rng.choice([0, 7, 2**40, True])
    if isinstance(field, (fields.Decimal, fields.Float)):
        return rng.choice([decimal.Decimal("12.30"), 1.5, 0])
    if isinstance(field, fields.Mapping) and field.value_field is not None:
        return {"k": _value(field.value_field, rng, depth + 1)}
    if isinstance(field, (fields.Mapping, fields.Raw)):
        return {"k": rng.choice(["v", 1, None])}
    return rng.choice(["text", "Ünïcode ✓", "", 42])


def _sample(schema: Schema, rng: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in schema.dump_fields.items():
        if depth > 3 or rng.random() < 0.1:
            continue  # missing
        out[field.attribute or name] = _value(field, rng, depth)
    return out


def test_every_declared_response_schema_dumps_as_marshmallow_does():
    schemas = _response_schemas()
    assert len(schemas) > 50  # every service's routes were found
    rng = random.Random(19)
    for label, schema in schemas:
        for _ in range(8):
            obj = _sample(schema, rng)
            expected = json.dumps(schema.dump(obj), default=str)
            assert json.dumps(dump(schema, obj), default=str) == expected, label
        objs = [_sample(schema, rng) for _ in range(3)]
        assert json.dumps(dump(schema, objs, many=True), default=str) == json.dumps(
            schema.dump(objs, many=True), default=str), label
