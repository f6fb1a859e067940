"""Request and response bodies (marshmallow); the kit refuses unknown fields with a 422.

Each ``...Patch`` schema is its create schema loaded partially: only the fields sent change,
and nothing gets a default. Text is the kit's ``Text`` (trimmed; no control characters; one
line unless it is remarks or a template body); ``names`` takes the configured languages only
(``CRM_LANGUAGES``), each name at most once whatever the case of its tag.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from crm_catalogue.tables import TEMPLATE_KINDS, VISIBLE_AT
from crm_kit.web import limits
from crm_kit.web.fields import FullMatch, StrictBoolean, Text, Timestamp
from crm_kit.web.http import configured_languages
from crm_kit.web.pagination import PageQuery

LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
CODE = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")
COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
LANGUAGE_TAG_LENGTH = 35  # BCP 47's longest practical tag; only the configured languages are taken anyway
NAME_LENGTH = limits.CATALOGUE_NAME_LENGTH
CODE_LENGTH = limits.CATALOGUE_CODE_LENGTH
MAX_IDS = 1000  # template or stage ids in one request


def _strict_bool(**kw: Any) -> fields.Boolean:
    return StrictBoolean(**kw)


class Names(fields.Dict):
    """Display names by language: only the configured languages (``CRM_LANGUAGES``), each once.

    A tag is matched without regard to case and stored as configured (``pt-br`` -> ``pt-BR``).
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        names = super()._deserialize(value, attr, data, **kwargs)
        configured = {tag.lower(): tag for tag in configured_languages()}
        out: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        for tag, name in names.items():
            language = configured.get(tag.lower())
            if language is None:
                errors[tag] = [f"Not a configured language; names are taken in {', '.join(configured.values())}."]
            elif language in out:
                errors[tag] = [f"{language} is given twice."]
            else:
                out[language] = name
        if errors:
            raise ValidationError(errors)
        return out


def _names(**kw: Any) -> fields.Dict:
    return Names(
        keys=Text(validate=[FullMatch(LANGUAGE_TAG, error="Not a language tag (en, nl, pt-BR, ...)."),
                            validate.Length(max=LANGUAGE_TAG_LENGTH)]),
        values=Text(required=True, validate=validate.Length(max=NAME_LENGTH)),
        validate=validate.Length(min=1, error="Give a name in at least one language."),
        metadata={"description": "Display names by language tag, e.g. {\"en\": \"New\", \"nl\": \"Nieuw\"}; "
                                 "only the configured languages (CRM_LANGUAGES; by default en and nl), others "
                                 "are refused (422). A PATCH replaces the whole object."},
        **kw,
    )


def _code(**kw: Any) -> fields.String:
    return Text(validate=[FullMatch(CODE, error="1-50 letters, digits, '_', '.' or '-'."),
                          validate.Length(max=CODE_LENGTH)],
                metadata={"description": "Unique in its kind (and table) whatever its case: FAIR and fair are the "
                                         "same code (409)."}, **kw)


def _index(**kw: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=1_000_000),
                          metadata={"description": "Sort position; default: after the last."}, **kw)


def _ids(**kw: Any) -> fields.List:
    return fields.List(fields.String(validate=limits.ID), validate=validate.Length(max=MAX_IDS), **kw)


class StageIn(Schema):
    """A stage of the lead or opportunity pipeline."""

    names = _names(required=True)
    code = _code(required=True)
    index = _index()
    active = _strict_bool(load_default=True)
    is_default = _strict_bool(load_default=False, metadata={"description": "The stage a new record gets."})
    is_end = _strict_bool(load_default=False)
    is_default_end = _strict_bool(load_default=False,
                                  metadata={"description": "The end stage a converted lead moves to."})
    color = Text(load_default=None, allow_none=True,
                 validate=[FullMatch(COLOR, error="A colour is #RRGGBB."), validate.Length(max=7)])
    remarks = Text(multiline=True, load_default="", validate=validate.Length(max=10000))
    procedure_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=limits.ID_LENGTH))
    stage_group_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=limits.ID_LENGTH))
    email_template_ids = _ids(load_default=list)
    document_template_ids = _ids(load_default=list)


class StagePatch(StageIn):
    """The fields of a stage to change."""


# Responses carry the requests' limits (the validators only document them here).
def _names_out() -> fields.Dict:
    return fields.Dict(keys=fields.String(validate=validate.Length(max=LANGUAGE_TAG_LENGTH)),
                       values=fields.String(validate=validate.Length(max=NAME_LENGTH)))


def _name_out() -> fields.String:
    return fields.String(validate=validate.Length(max=NAME_LENGTH),
                         metadata={"description": "From names, in the best language of Accept-Language."})


class StageOut(Schema):
    id = fields.String(validate=limits.ID)
    names = _names_out()
    name = _name_out()
    code = fields.String(validate=validate.Length(max=CODE_LENGTH))
    index = fields.Integer(validate=validate.Range(min=0, max=limits.INT32_MAX))
    active = fields.Boolean()
    is_default = fields.Boolean()
    is_end = fields.Boolean()
    is_default_end = fields.Boolean()
    color = fields.String(allow_none=True, validate=validate.Length(max=7))
    remarks = fields.String(validate=validate.Length(max=10000))
    procedure_id = fields.String(allow_none=True, validate=limits.ID)
    stage_group_id = fields.String(allow_none=True, validate=limits.ID)
    email_template_ids = fields.List(fields.String(validate=limits.ID))
    document_template_ids = fields.List(fields.String(validate=limits.ID))
    version = fields.Integer(validate=limits.VERSION)
    created_at = Timestamp()
    modified_at = Timestamp()


class EntryIn(Schema):
    """An entry of one of the 8 tables of a kind."""

    names = _names(required=True)
    code = _code(required=True)
    index = _index()
    active = _strict_bool(load_default=True)


class EntryPatch(EntryIn):
    """The fields of a table entry to change."""


class EntryOut(Schema):
    id = fields.String(validate=limits.ID)
    names = _names_out()
    name = _name_out()
    code = fields.String(validate=validate.Length(max=CODE_LENGTH))
    index = fields.Integer(validate=validate.Range(min=0, max=limits.INT32_MAX))
    active = fields.Boolean()
    protected = fields.Boolean(metadata={"description": "Shipped with the platform (roles MAIN and SIGN): "
                                                        "cannot be deleted, deactivated or recoded."})
    version = fields.Integer(validate=limits.VERSION)
    created_at = Timestamp()
    modified_at = Timestamp()


class TemplateIn(Schema):
    """An email, document or print template."""

    kind = fields.String(required=True, validate=validate.OneOf(TEMPLATE_KINDS))
    name = Text(required=True, validate=validate.Length(max=200))
    subject = Text(load_default=None, allow_none=True, validate=validate.Length(max=500),
                   metadata={"description": "Email templates only."})
    body = Text(multiline=True, load_default="", validate=validate.Length(max=500_000),
                metadata={"description": "Jinja template text; the record is `lead`/`opportunity` and `record`."})
    visible_at = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(list(VISIBLE_AT)))
    stage_ids = _ids(load_default=list, metadata={"description": "Stages of the kind visible_at names."})


class TemplatePatch(TemplateIn):
    """The fields of a template to change."""


class TemplateOut(Schema):
    id = fields.String(validate=limits.ID)
    kind = fields.String(validate=validate.OneOf(TEMPLATE_KINDS))
    name = fields.String(validate=validate.Length(max=NAME_LENGTH))
    subject = fields.String(allow_none=True, validate=validate.Length(max=500))
    body = fields.String(validate=validate.Length(max=500_000))
    visible_at = fields.String(allow_none=True, validate=validate.OneOf(list(VISIBLE_AT)))
    stage_ids = fields.List(fields.String(validate=limits.ID))
    version = fields.Integer(validate=limits.VERSION)
    created_at = Timestamp()
    modified_at = Timestamp()


class ActiveQuery(PageQuery):
    active = fields.Boolean()


class TemplateQuery(PageQuery):
    kind = fields.String(validate=validate.OneOf(TEMPLATE_KINDS))
    visible_at = fields.String(validate=validate.OneOf(list(VISIBLE_AT)))
    stage_id = fields.String(validate=limits.ID)
