"""The edge schemas of a kind's records (marshmallow; unknown fields are refused by the kit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from crm_kit.bulk import MAX_BULK_CREATE, bulk_result_schemas, import_key_field
from crm_kit.web import limits
from crm_kit.web.fields import Currency, Money, PerItem, Text, Timestamp
from crm_kit.web.pagination import PageQuery
from crm_pipeline.kind import RecordKind

_ID = validate.Length(min=1, max=36)
_REF = validate.Length(min=1, max=200)
VIEWS = ("all", "mine", "office")
BULK_ACTIONS = ("set_stage", "add_to_group", "remove_from_group", "assign_owner", "delete")
CREATE = "create"
MAX_BULK = 200
BULK_STATUSES = ("ok", "error", "created", "exists")


def record_fields(*, partial: bool, money: bool) -> dict[str, fields.Field]:
    """Writable fields (with ``money``: amount, currency, probability, expected close date); on
    PATCH every field is optional and optional ones may be null."""
    opt: dict[str, Any] = {"allow_none": True} if partial else {"allow_none": True, "load_default": None}
    on_create: dict[str, Any] = {} if partial else {"load_default": None, "allow_none": True}
    description: dict[str, Any] = {} if partial else {"load_default": ""}
    listed: dict[str, Any] = {} if partial else {"load_default": list}
    out: dict[str, fields.Field] = {
        "title": Text(required=not partial, validate=validate.Length(min=1, max=500)),
        "description": fields.String(validate=validate.Length(max=20000), **description),
        "company_id": fields.String(validate=_ID, **opt),
        "contact_id": fields.String(validate=_ID, **opt),
        "owner_id": fields.String(validate=_REF, **on_create),
        "office_id": fields.String(validate=_REF, **on_create),
        "stage_id": fields.String(validate=_ID, **on_create),
        "source_id": fields.String(validate=_ID, **opt),
        "priority_id": fields.String(validate=_ID, **opt),
        "category_id": fields.String(validate=_ID, **opt),
        "procedure_id": fields.String(validate=_ID, **opt),
        "attribute_ids": fields.List(fields.String(validate=_ID), validate=validate.Length(max=100), **listed),
    }
    if not partial:
        out["group_ids"] = fields.List(fields.String(validate=_ID), validate=validate.Length(max=100),
                                       load_default=list)
    if money:
        out.update(
            amount=Money(places=2, validate=validate.Range(min=0, max=10**15), **opt),  # more decimals: 422
            currency=Currency(**opt),  # an ISO 4217 code (crm_kit.web.currencies)
            probability=fields.Integer(strict=True, validate=validate.Range(min=0, max=100), **opt),
            expected_close_date=fields.Date(**opt),
        )
    return out


# Fields a client never writes: the server or a conversion sets them. Like ``id`` or
# ``version`` they are not in the create, patch or copy schemas, so sending one is a 422
# (for these with a message that says why); the output schema marks them readOnly.
READ_ONLY = {"lead_id": "Read-only: only a conversion sets an opportunity's lead."}


class _RefusesReadOnly(Schema):
    """Refuses the READ_ONLY fields with their own message rather than "Unknown field."."""

    @pre_load
    def _read_only(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            errors = {name: [message] for name, message in READ_ONLY.items() if name in data}
            if errors:
                raise ValidationError(errors)
        return data


# Responses: the validators only document how long the values can be (what came in was checked).
class StageOut(Schema):
    id = fields.String(validate=limits.ID)
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH))
    code = fields.String(validate=validate.Length(max=limits.CATALOGUE_CODE_LENGTH))
    color = fields.String(allow_none=True, validate=validate.Length(max=limits.STAGE_COLOR_LENGTH))
    is_end = fields.Boolean()
    remarks = fields.String(allow_none=True, validate=validate.Length(max=10000))


class HistoryOut(Schema):
    from_stage_id = fields.String(allow_none=True, validate=limits.ID)
    to_stage_id = fields.String(validate=limits.ID)
    at = Timestamp()
    by = fields.String(validate=limits.REF)
    cause = fields.String(validate=validate.Length(max=100), metadata={
        "description": "user, trigger:<id>, conversion or bulk."})


class GroupIn(Schema):
    group_id = fields.String(required=True, validate=_ID)


KEY_DESCRIPTION = ("The item's idempotency key (e.g. the import file's id and the row number): a key seen before "
                   "(in this office, for this kind) creates nothing and answers `exists` with the id it made, "
                   "whatever the other fields say. Unique per office and kind; the key of a deleted record is free "
                   "again.")


class BulkIn(Schema):
    """One action on many records: ``ids`` with ``set_stage|add_to_group|remove_from_group|assign_owner|delete``,
    or ``items`` with ``create``."""

    ids = fields.List(fields.String(validate=_ID), validate=validate.Length(min=1, max=MAX_BULK), metadata={
        "description": "The records the action applies to (every action but create)."})
    action = fields.String(required=True, validate=validate.OneOf((*BULK_ACTIONS, CREATE)))
    stage_id = fields.String(validate=_ID)
    group_id = fields.String(validate=_ID)
    owner_id = fields.String(validate=_REF)

    @validates_schema
    def _argument_for_action(self, data: dict, **_: object) -> None:
        action = data.get("action", "")
        if action == CREATE:
            if "ids" in data:
                raise ValidationError("create takes items, not ids.", field_name="ids")
            if not data.get("items"):
                raise ValidationError("create needs items.", field_name="items")
            return
        if "items" in data:
            raise ValidationError(f"{action} takes ids, not items (only create takes items).", field_name="items")
        if not data.get("ids"):
            raise ValidationError(f"{action} needs ids.", field_name="ids")
        needed = {"set_stage": "stage_id", "add_to_group": "group_id", "remove_from_group": "group_id",
                  "assign_owner": "owner_id"}.get(action)
        if needed and not data.get(needed):
            raise ValidationError(f"{data['action']} needs {needed}.", field_name=needed)


BulkResultOut, BulkOut = bulk_result_schemas(
    "Bulk", statuses=BULK_STATUSES,
    index="create: the item's position in items (from 0).",
    id_="The record's id; create: the record made (created) or made before with the same key (exists), null on "
        "error.",
    status="ok or error for an action on ids; created, exists or error for create items.",
    errors="create: the item's invalid fields (as a 422 names them), when it failed on its fields.",
    results="One result per id (in order, repeated ids once) or per item (in order).")


def bulk_schemas(kind: RecordKind, create: type[Schema]) -> tuple[type[Schema], type[Schema]]:
    """The body of ``POST /v1/{records}/bulk`` (``BulkIn`` with ``items`` of this kind) and the
    schema one create item is loaded with (the create body plus ``key``)."""
    name = kind.kind.capitalize()
    item = type(f"{name}BulkCreateItem", (create,), {"key": import_key_field(KEY_DESCRIPTION)})
    body = type(f"{name}Bulk", (BulkIn,), {"items": PerItem(fields.Nested(item), validate=validate.Length(
        min=1, max=MAX_BULK_CREATE), metadata={
        "description": f"create: up to {MAX_BULK_CREATE} new {kind.plural}, each the body of POST "
                       f"{kind.collection_path} plus its `key`; each is checked as that create would be and "
                       "succeeds or fails on its own, all in one transaction."})})
    return body, item


class OverviewGroupOut(Schema):
    id = fields.String(validate=limits.ID)
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH))
    count = fields.Integer(validate=limits.COUNT)


# A sum of amounts: no fixed bound, but its digits have one (a NUMERIC's 131072 before the point).
MONEY_SUM_LENGTH = 131_075


def overview_schemas(kind: RecordKind) -> tuple[type[Schema], type[Schema]]:
    """The query and the answer of ``GET /v1/{records}/overview`` (named per kind: the
    opportunities' board has money, the leads' has not)."""
    name = kind.kind.capitalize()
    query = Schema.from_dict({
        "view": fields.String(load_default="all", validate=validate.OneOf(VIEWS), metadata={
            "description": "The tab whose board `stages` shows, as the list's `view`: `all` (default), `mine` or "
                           "`office`."}),
        "stage_group_id": fields.String(validate=_ID, metadata={
            "description": "The stage group tab: `stages` holds that group's stages and counts its records, as "
                           "the list's `stage_group_id` (422 if it names no stage group of this kind)."}),
        "filter": fields.String(validate=validate.Length(min=1, max=2000), metadata={
            "description": "The list's advanced search: narrows every count of the answer (422 for bad syntax)."}),
    }, name=f"{name}OverviewQuery")
    money: dict[str, fields.Field] = {} if not kind.money else {
        "amount": fields.String(validate=validate.Length(max=MONEY_SUM_LENGTH), metadata={
            "pattern": r"^[0-9]+\.[0-9]{2}$", "example": "2500.00",
            "description": "Sum of the records' amount (as stored, whatever their currency)."}),
        "weighted_amount": fields.String(validate=validate.Length(max=MONEY_SUM_LENGTH), metadata={
            "pattern": r"^[0-9]+\.[0-9]{2}$", "example": "1500.00",
            "description": "Sum of amount * probability / 100, rounded to cents as the stage report does."})}
    stage = Schema.from_dict({
        "id": fields.String(validate=limits.ID),
        "name": fields.String(allow_none=True, validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH),
                              metadata={"description": "Null for a stage this service does not know (deleted)."}),
        "count": fields.Integer(validate=limits.COUNT), **money}, name=f"{name}OverviewStage")
    out = Schema.from_dict({
        "stage_groups": fields.List(fields.Nested(OverviewGroupOut)),
        "mine": fields.Integer(validate=limits.COUNT),
        "office": fields.Integer(validate=limits.COUNT),
        "all": fields.Integer(validate=limits.COUNT),
        "stages": fields.List(fields.Nested(stage), metadata={
            "description": "The board of the tab the query selects: per stage in index order, its count"
                           + (", amount and weighted amount" if kind.money else "") + "."}),
    }, name=f"{name}Overview")
    return query, out


@dataclass(frozen=True)
class RecordSchemas:
    create: type[Schema]
    patch: type[Schema]
    copy: type[Schema]
    out: type[Schema]
    list_query: type[Schema]


def record_schemas(kind: RecordKind) -> RecordSchemas:
    """The schemas of ``kind`` (with its money fields and its own read-only fields)."""
    name = kind.kind.capitalize()
    out_fields: dict[str, fields.Field] = {
        "id": fields.String(validate=limits.ID), **record_fields(partial=True, money=kind.money),
        # Money goes out as an exact decimal string ("2500.00"); it comes in as a number or such a string.
        # At most 10^15 with 2 decimals: 19 characters.
        **({} if not kind.money else {"amount": fields.String(allow_none=True, validate=validate.Length(max=19),
                                                            metadata={"pattern": r"^[0-9]+\.[0-9]{2}$",
                                                                      "example": "2500.00"})}),
        "group_ids": fields.List(fields.String(validate=limits.ID)),
        "stage": fields.Nested(StageOut), "stage_group_id": fields.String(allow_none=True, validate=limits.ID),
        "stage_changed_at": Timestamp(), "version": fields.Integer(validate=limits.VERSION),
        "created_at": Timestamp(), "created_by": fields.String(validate=limits.REF),
        "modified_at": Timestamp(), "modified_by": fields.String(validate=limits.REF),
    }
    if kind.out_fields is not None:
        out_fields.update(kind.out_fields())
    list_fields: dict[str, fields.Field] = {
        "view": fields.String(load_default="all", validate=validate.OneOf(VIEWS)),
        **{f: fields.String(validate=_REF if f in ("owner_id", "office_id") else _ID)
           for f in ("stage_id", "stage_group_id", "owner_id", "office_id", "source_id", "priority_id",
                     "category_id", "group_id", "company_id", "contact_id")},
        "created_after": Timestamp(), "created_before": Timestamp(),
        "modified_after": Timestamp(), "modified_before": Timestamp(),
        "q": fields.String(validate=validate.Length(min=1, max=200)),
        "filter": fields.String(validate=validate.Length(min=1, max=2000)),
        "order_by": fields.String(validate=validate.Length(min=1, max=200)),
    }
    list_fields.update({f: fields.String(validate=_ID) for f in kind.list_filters})
    copy_fields = record_fields(partial=True, money=kind.money)
    return RecordSchemas(
        create=_RefusesReadOnly.from_dict(record_fields(partial=False, money=kind.money), name=f"{name}Create"),
        patch=_RefusesReadOnly.from_dict(record_fields(partial=True, money=kind.money), name=f"{name}Patch"),
        copy=_RefusesReadOnly.from_dict(copy_fields, name=f"{name}Copy"),
        out=Schema.from_dict(out_fields, name=name),
        list_query=type(f"{name}ListQuery", (PageQuery,), dict(list_fields)),
    )
