"""The import routes' bodies, queries and answers (marshmallow; unknown fields are refused by the kit)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from crm_kit.bulk import FieldErrorOut
from crm_kit.imports.jobs import (
    JOB_STATUSES,
    MAX_CELL,
    MAX_COLUMN_NAME,
    MAX_COLUMNS,
    MAX_FILE_NAME,
    MAX_ROWS,
    MAX_ROWS_PER_CALL,
    ROW_STATUSES,
    SAMPLE,
)
from crm_kit.web import limits
from crm_kit.web.fields import Text, Timestamp
from crm_kit.web.pagination import PageQuery

_COUNT = validate.Range(min=0, max=MAX_ROWS)
_LINE = validate.Range(min=2, max=MAX_ROWS + 1)
_FIELD_NAME = validate.Length(min=1, max=100)


def _rows(minimum: int) -> fields.List:
    return fields.List(
        fields.List(fields.String(validate=validate.Length(max=MAX_CELL)), validate=validate.Length(max=MAX_COLUMNS)),
        **({"required": True} if minimum else {"load_default": list}),
        validate=validate.Length(min=minimum, max=MAX_ROWS_PER_CALL), metadata={
            "description": f"The CSV's data rows in file order, each a list of its cells (text, at most {MAX_CELL} "
                           f"characters; trimmed), at most {MAX_ROWS_PER_CALL} a call (and the 1 MiB body limit). "
                           "A row may have fewer cells than the header (the rest are empty), not more. The first "
                           "row of the job is CSV line 2, the header being line 1."})


class ImportIn(Schema):
    file_name = Text(required=True, validate=validate.Length(min=1, max=MAX_FILE_NAME),
                     metadata={"description": "The uploaded file's name (shown in the list of imports)."})
    columns = fields.List(fields.String(validate=validate.Length(max=MAX_COLUMN_NAME)), required=True,
                          validate=validate.Length(min=1, max=MAX_COLUMNS), metadata={
                              "description": f"The CSV's header: 1 to {MAX_COLUMNS} column names, unique after "
                                             "trimming."})
    rows = _rows(0)


class ImportRowsIn(Schema):
    rows = _rows(1)


class ImportMappingIn(Schema):
    mapping = fields.Dict(
        keys=fields.String(validate=validate.Length(max=MAX_COLUMN_NAME)), values=fields.String(validate=_FIELD_NAME),
        required=True, metadata={
            "maxProperties": MAX_COLUMNS,
            "description": "column -> field (one of the job's `fields`). Columns left out are not imported; every "
                           "required field must be mapped, each field once."})
    key_column = fields.String(allow_none=True, load_default=None, validate=validate.Length(min=1,
                                                                                           max=MAX_COLUMN_NAME),
                               metadata={"description": "The column holding each row's idempotency key (an empty "
                                                        "cell makes the row invalid); null: a digest of the header, "
                                                        "the row's cells and how many identical rows came before "
                                                        "it."})


class ImportStartIn(Schema):
    """No fields: the body of a start may be left out or be ``{}``."""


class ImportFieldErrorOut(FieldErrorOut):
    """A row's invalid field, as the bulk create names it (its own name in the OpenAPI document)."""


class ImportRowOut(Schema):
    number = fields.Integer(validate=_LINE, metadata={"description": "The row's CSV line (the header is line 1)."})
    cells = fields.List(fields.String(validate=validate.Length(max=MAX_CELL)),
                        validate=validate.Length(max=MAX_COLUMNS))
    status = fields.String(validate=validate.OneOf(ROW_STATUSES), metadata={
        "description": "pending (not checked yet), valid / invalid (checked), created / exists / error (imported)."})
    id = fields.String(allow_none=True, validate=limits.ID, metadata={
        "description": "The record made (created) or made before with the same key (exists)."})
    error = fields.String(allow_none=True, validate=limits.MESSAGE, metadata={
        "description": "Why the row is invalid or failed, each bad field named."})
    errors = fields.List(fields.Nested(ImportFieldErrorOut), validate=validate.Length(max=100), metadata={
        "description": "The row's invalid fields (the bulk create's names; the key column's name for an empty "
                       "key)."})


class ImportFieldOut(Schema):
    name = fields.String(validate=_FIELD_NAME)
    required = fields.Boolean()
    many = fields.Boolean(metadata={"description": "A list: its cell is split on `;`."})
    description = fields.String(validate=validate.Length(max=2000))


class ImportJobOut(Schema):
    id = fields.String(validate=limits.ID)
    collection = fields.String(validate=validate.OneOf(("leads", "opportunities", "companies", "contacts")))
    file_name = fields.String(validate=validate.Length(max=MAX_FILE_NAME))
    status = fields.String(validate=validate.OneOf(JOB_STATUSES), metadata={
        "description": "uploading -> checking -> checked -> running -> done, or cancelled."})
    columns = fields.List(fields.String(validate=validate.Length(max=MAX_COLUMN_NAME)),
                          validate=validate.Length(max=MAX_COLUMNS))
    mapping = fields.Dict(keys=fields.String(validate=validate.Length(max=MAX_COLUMN_NAME)),
                          values=fields.String(validate=_FIELD_NAME), allow_none=True,
                          metadata={"maxProperties": MAX_COLUMNS})
    key_column = fields.String(allow_none=True, validate=validate.Length(max=MAX_COLUMN_NAME))
    fields_ = fields.List(fields.Nested(ImportFieldOut), data_key="fields", attribute="fields",
                          validate=validate.Length(max=100), metadata={
                              "description": "What columns can map to: the bulk create item's fields."})
    sample = fields.List(fields.Nested(ImportRowOut), validate=validate.Length(max=SAMPLE), metadata={
        "description": f"The first {SAMPLE} rows with their status (empty in the list of imports)."})
    rows = fields.Integer(validate=_COUNT, metadata={"description": "Rows uploaded."})
    checked = fields.Integer(validate=_COUNT, metadata={"description": "Rows checked with the current mapping."})
    valid = fields.Integer(validate=_COUNT)
    invalid = fields.Integer(validate=_COUNT)
    processed = fields.Integer(validate=_COUNT, metadata={"description": "Rows imported so far (created, "
                                                                         "existing or failed)."})
    created = fields.Integer(validate=_COUNT)
    existing = fields.Integer(validate=_COUNT)
    failed = fields.Integer(validate=_COUNT)
    created_at = Timestamp()
    created_by = fields.String(validate=limits.REF)
    office_id = fields.String(validate=limits.REF)
    started_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)
    version = fields.Integer(validate=limits.VERSION)


class ImportRowsQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(ROW_STATUSES), metadata={"description": "Only rows in this "
                                                                                           "status."})
