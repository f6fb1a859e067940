"""Request and response shapes of the triggers API.

``event`` and each action are tagged objects: ``type`` picks the exact set of keys the object
must have (a missing or extra key is a 422 naming it, e.g. ``event.stage_id``,
``actions.0.group_id``). Whether the ids are usable catalogue entries is checked in rules.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from crm_kit.web import limits
from crm_kit.web.fields import StrictBoolean, Timestamp
from crm_kit.web.pagination import PageQuery
from crm_triggers.engine import MAX_DEPTH

KINDS = ("lead", "opportunity")
MAX_SECONDS = 365 * 24 * 3600
# The list filters a condition may name; lead_id only for opportunities (checked in rules.py).
CONDITION_KEYS = ("stage_id", "stage_group_id", "owner_id", "office_id", "source_id", "priority_id",
                  "category_id", "group_id", "company_id", "contact_id", "lead_id")
RESULTS = ("applied", "failed", "skipped_loop")


def _id(**kw: Any) -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=36), **kw)


def _type(name: str) -> fields.String:
    return fields.String(required=True, validate=validate.Equal(name))


def _shape(name: str, **extra: fields.Field) -> Schema:
    schema = Schema.from_dict({"type": _type(name), **extra}, name=f"Shape_{name}")()
    schema.unknown = RAISE
    return schema


EVENT_SHAPES: dict[str, Schema] = {
    "created": _shape("created"),
    "added_to_group": _shape("added_to_group", group_id=_id()),
    "stage_changed": _shape("stage_changed", stage_id=_id()),
    "stage_group_changed": _shape("stage_group_changed", stage_group_id=_id()),
    "not_modified_for": _shape("not_modified_for", seconds=fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=MAX_SECONDS))),
}
ACTION_SHAPES: dict[str, Schema] = {
    "add_to_group": _shape("add_to_group", group_id=_id()),
    "remove_from_group": _shape("remove_from_group", group_id=_id()),
    "set_stage": _shape("set_stage", stage_id=_id()),
}


class Tagged(fields.Field):
    """A JSON object whose ``type`` selects the schema it must match exactly."""

    def __init__(self, shapes: Mapping[str, Schema], **kw: Any) -> None:
        kinds = "; ".join(f"{name}: {', '.join(shape.fields)}" for name, shape in shapes.items())
        kw.setdefault("metadata", {"description": f"An object whose type picks its keys ({kinds})."})
        super().__init__(**kw)
        self.shapes = shapes

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError("Expected an object with a type.")
        kind = value.get("type")
        shape = self.shapes.get(kind) if isinstance(kind, str) else None
        if shape is None:
            raise ValidationError({"type": [f"Must be one of: {', '.join(self.shapes)}."]})
        loaded: dict[str, Any] = shape.load(value)
        return loaded


def _strict_bool(**kw: Any) -> fields.Boolean:
    return StrictBoolean(**kw)


class TriggerIn(Schema):
    """A trigger rule: when ``event`` happens to a record of ``kind`` and ``conditions`` hold,
    run ``actions``."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    active = _strict_bool(load_default=True)
    event = Tagged(EVENT_SHAPES, required=True)
    conditions = fields.Dict(
        keys=fields.String(validate=validate.OneOf(CONDITION_KEYS)),
        values=fields.String(validate=validate.Length(min=1, max=200)),
        load_default=dict,
        metadata={"description": "List-filter fields to values; all must hold when the event happens."},
    )
    actions = fields.List(Tagged(ACTION_SHAPES), required=True, validate=validate.Length(min=1, max=10))


class TriggerPatch(TriggerIn):
    """Any subset; event, conditions and actions replace the old ones whole. ``kind`` cannot change."""

    active = _strict_bool()
    conditions = fields.Dict(keys=fields.String(validate=validate.OneOf(CONDITION_KEYS)),
                             values=fields.String(validate=validate.Length(min=1, max=200)))


# Responses: the validators only document how long the values can be (what came in was checked).
class TriggerOut(Schema):
    id = fields.String(validate=limits.ID)
    name = fields.String(validate=validate.Length(max=200))
    kind = fields.String(validate=validate.OneOf(KINDS))
    active = fields.Boolean()
    event = fields.Dict()
    conditions = fields.Dict()
    actions = fields.List(fields.Dict(), validate=validate.Length(max=10))
    version = fields.Integer(validate=limits.VERSION)
    created_at = Timestamp()
    created_by = fields.String(validate=limits.REF)
    modified_at = Timestamp()
    modified_by = fields.String(validate=limits.REF)
    warnings = fields.List(fields.String(validate=limits.MESSAGE),
                           metadata={"description": "Only on create and change: loops found."})


class TriggerQuery(PageQuery):
    kind = fields.String(validate=validate.OneOf(KINDS))
    active = fields.Boolean()


class ValidateQuery(Schema):
    validate_only = fields.Boolean(truthy={"true"}, falsy={"false"}, load_default=False, metadata={
        "description": "true: check the trigger (422 as a save would) and answer its loop warnings, saving nothing."})


class ExecutionQuery(PageQuery):
    record_id = fields.String(validate=validate.Length(min=1, max=36))
    trigger_id = fields.String(validate=validate.Length(min=1, max=36))
    result = fields.String(validate=validate.OneOf(RESULTS))


class TriggerExecutionQuery(PageQuery):
    result = fields.String(validate=validate.OneOf(RESULTS))


class ExecutionOut(Schema):
    id = fields.String(validate=limits.ID)
    trigger_id = fields.String(validate=limits.ID)
    record_id = fields.String(validate=limits.ID)
    event_id = fields.String(validate=validate.Length(max=200))
    actions = fields.List(fields.Dict(), validate=validate.Length(max=10))
    result = fields.String(metadata={"enum": list(RESULTS)})
    reason = fields.String(allow_none=True, validate=limits.MESSAGE)
    trigger_depth = fields.Integer(validate=validate.Range(min=0, max=MAX_DEPTH))
    event_at = Timestamp(allow_none=True)
    at = Timestamp()
