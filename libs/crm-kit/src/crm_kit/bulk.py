"""What every bulk create shares (``POST /v1/{collection}/bulk`` with ``action: create``, and the
imports that go through it): its limits, the item's idempotency key, the per-item result and how
one item is loaded and refused. One definition for the records services and linking.

Flask-free: the import worker creates records through the same bulk create as the route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from crm_kit.errors import DomainError, Invalid
from crm_kit.web import limits
from crm_kit.web.fields import Text
from crm_kit.web.input import MAX_ERRORS, load_body
from crm_kit.web.problem import INVALID_FIELDS, flatten_marshmallow

MAX_BULK_CREATE = 500  # items of one bulk create: well inside the 1 MiB body limit for import rows
IMPORT_KEY_LENGTH = 200  # an item's idempotency key (the ``import_key`` columns have this length)
BULK_CREATE_STATUSES = ("created", "exists", "error")


def import_key_field(description: str, **kw: Any) -> fields.Field:
    """A bulk create item's idempotency ``key`` (``description`` says what a key seen before does)."""
    return Text(required=True, validate=validate.Length(min=1, max=IMPORT_KEY_LENGTH),
                metadata={"description": description}, **kw)


class FieldErrorOut(Schema):
    field = fields.String(validate=validate.Length(max=200))
    message = fields.String(validate=limits.MESSAGE)


def bulk_result_schemas(name: str, *, statuses: Sequence[str] = BULK_CREATE_STATUSES, index: str, id_: str,
                        errors: str, results: str, status: str | None = None) -> tuple[type[Schema], type[Schema]]:
    """The schema of one bulk result (``{index, status, id, error, errors}``) and of the answer
    (``{results}``, at most ``MAX_BULK_CREATE``), named ``<name>ResultOut`` and ``<name>Out``; the
    arguments describe each member in the collection's words."""
    result = Schema.from_dict({
        "index": fields.Integer(validate=validate.Range(min=0, max=MAX_BULK_CREATE - 1),
                                metadata={"description": index}),
        "id": fields.String(allow_none=True, validate=limits.ID, metadata={"description": id_}),
        "status": fields.String(validate=validate.OneOf(statuses),
                                metadata={"description": status} if status else {}),
        "error": fields.String(allow_none=True, validate=limits.MESSAGE, metadata={"description": "Why it failed."}),
        "errors": fields.List(fields.Nested(FieldErrorOut), validate=validate.Length(max=100),
                              metadata={"description": errors}),
    }, name=f"{name}ResultOut")
    answer = Schema.from_dict({
        "results": fields.List(fields.Nested(result), validate=validate.Length(max=MAX_BULK_CREATE),
                               metadata={"description": results}),
    }, name=f"{name}Out")
    return result, answer


def load_item(raw: Any, schema: Schema) -> Any:
    """One item, loaded as the body of the single create would be: the item, or ``Invalid`` naming
    its fields (relative to the item)."""
    if not isinstance(raw, dict):
        raise Invalid("The item must be a JSON object.", errors=[{"field": "body", "message": "Expected an object."}])
    try:
        return load_body(raw, schema)
    except ValidationError as exc:
        raise Invalid(INVALID_FIELDS, errors=flatten_marshmallow(exc.messages)[:MAX_ERRORS]) from None


def item_error(exc: DomainError) -> dict[str, Any]:
    """A refused item's ``error`` (in words, each bad field named) and ``errors`` (its fields, when it
    failed on its fields), as a bulk result carries them."""
    out: dict[str, Any] = {"error": exc.detail[:1000]}
    if exc.errors:
        out["error"] = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in exc.errors)[:1000]
        out["errors"] = [{"field": str(e.get("field", ""))[:200], "message": str(e.get("message", ""))[:1000]}
                         for e in exc.errors[:MAX_ERRORS]]
    return out


__all__ = ["BULK_CREATE_STATUSES", "IMPORT_KEY_LENGTH", "MAX_BULK_CREATE", "FieldErrorOut", "bulk_result_schemas",
           "import_key_field", "item_error", "load_item"]
