"""marshmallow fields with the API contract's formats."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any

from marshmallow import ValidationError, fields, validate

from crm_kit.web.currencies import CURRENCIES
from crm_kit.web.input import text_error, text_pattern, too_long, trim


class Timestamp(fields.DateTime):
    """RFC 3339 in UTC with a ``Z`` (``2026-11-23T10:00:00Z``), as the contract writes times.

    Input may carry any offset (it is converted to UTC); a time without an offset is refused,
    since it would mean something different on each server. At most ``MAX_LENGTH`` characters
    (the longest the server writes is 27; the document says so too).
    """

    MAX_LENGTH = 64

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if isinstance(value, str) and len(value) > self.MAX_LENGTH:
            raise self.make_error("invalid", input=value, obj_type="timestamp")
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is None:
            raise self.make_error("invalid", input=value, obj_type="timestamp with a time zone")
        return parsed.astimezone(dt.UTC)


class StrictBoolean(fields.Boolean):
    """JSON ``true``/``false`` only: ``"yes"``, ``1`` or ``0`` for a flag is a client bug, not intent
    (marshmallow's ``truthy={True}`` alone would still take ``1`` and ``0``, which equal them)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class FullMatch(validate.Regexp):
    """``validate.Regexp`` that must match the whole value (``re.fullmatch``).

    Write the pattern in ECMA-262 syntax, anchored with ``^...$`` (no Python-only ``\\A``/``\\Z``):
    the OpenAPI document publishes it as the field's ``pattern``. marshmallow's own ``Regexp``
    uses ``re.match``, where ``$`` also matches before a final line break.
    """

    def __call__(self, value: Any) -> Any:
        regex: Any = self.regex  # a str pattern (marshmallow types it for bytes too)
        if not isinstance(value, str) or regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


_ENUM_VALIDATORS = (validate.Regexp, validate.OneOf, validate.Equal)


class Text(fields.String):
    """A string as the contract's input rules want it (``crm_kit.web.input``).

    Trimmed (``trim=False`` keeps it as sent); no control characters or unpaired surrogates,
    and no tab or line break unless ``multiline``; a required one may not be blank. The edge
    applies the same rules to every string field of a body; this field type also states them
    in the OpenAPI document (``pattern``, in ECMA-262 syntax) and holds them when a schema is
    loaded outside a request.
    """

    def __init__(self, *, multiline: bool = False, trim: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiline = multiline
        self.trim = trim
        if "pattern" not in self.metadata and not any(isinstance(v, _ENUM_VALIDATORS) for v in self.validators):
            self.metadata = {**self.metadata,
                             "pattern": text_pattern(multiline=multiline, not_blank=self.required)}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        problem = too_long(text, self)
        if problem:
            raise ValidationError(problem)
        if self.trim:
            text = trim(text)
        problem = text_error(text, multiline=self.multiline)
        if problem:
            raise ValidationError(problem)
        if self.required and not text:
            raise ValidationError("Must not be blank.")
        return text


class Money(fields.Decimal):
    """An exact amount with at most ``places`` decimals: more is a 422, never rounded.

    Takes a JSON number or a decimal string (``"2500.00"``); ``NaN`` and infinities are refused.
    The OpenAPI document says so in ``description`` and ``x-decimal-places`` (``multipleOf`` on
    a binary float would reject 0.07 in validators that divide floats).
    """

    def __init__(self, places: int = 2, **kwargs: Any) -> None:
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata.setdefault("x-decimal-places", places)
        metadata.setdefault("description", f"At most {places} decimals (never rounded); a number or a decimal "
                                           "string.")
        super().__init__(places=None, allow_nan=False, metadata=metadata, **kwargs)
        self.exact_places = places

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            value = trim(value)
        number = super()._deserialize(value, attr, data, **kwargs)
        if number is None:
            return number
        _, digits, exponent = number.as_tuple()
        if isinstance(exponent, int) and exponent < 0:
            trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0") or "0")
            if -exponent - min(trailing_zeros, -exponent) > self.exact_places:
                raise ValidationError(f"At most {self.exact_places} decimals; amounts are never rounded.")
        try:  # exactly the same value, written with its places (2.5 -> 2.50), as before
            return number.quantize(decimal.Decimal(1).scaleb(-self.exact_places), context=_EXACT)
        except decimal.InvalidOperation:  # more digits than a Decimal context holds: the range check refuses it
            return number

    def _validated(self, value: Any) -> decimal.Decimal:
        if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


_EXACT = decimal.Context(prec=40, traps=[decimal.Inexact, decimal.InvalidOperation])
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")


class Currency(Text):
    """An ISO 4217 currency code (``EUR``, ``USD``, ...): one of ``crm_kit.web.currencies.CURRENCIES``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.OneOf(sorted(CURRENCIES), error="Not an ISO 4217 currency code "
                                                                               "(e.g. EUR, USD)."))
        super().__init__(**kwargs)


class PerItem(fields.List):
    """A bulk call's ``items``: documented as a list of the item schema, but taken as they come
    (any JSON values): the route loads each item on its own (``crm_kit.bulk.load_item``),
    so a bad item fails alone with its errors, and the text rules are applied per item."""

    checked_per_item = True

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return list(value)
