"""Domain errors: what a rule says when it says no, in the domain's words and without HTTP.

Rules raise a subclass named for what went wrong (``UnknownStage(NotFound)``,
``StageInUse(Conflict)``, ``ChangedMeanwhile``...). Only the web edge turns one into
problem+json (``crm_kit.web.problem``: one table from these categories to a status); the
Kafka side decides from the type whether to retry (``ChangedMeanwhile``, ``Unavailable``) or
to refuse. Nothing here imports Flask, so a worker never loads the web stack.

Each error carries what a client needs to act on it: ``detail`` (the sentence shown to the
person), ``errors`` (one ``{"field", "message"}`` per offending field), and extension members
(``extra``, e.g. ``opportunity_id``) that name the things involved. ``title`` and ``type_``
override the category's defaults where the contract gives a refusal its own problem type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class DomainError(Exception):
    """The base of every refusal a rule makes."""

    def __init__(self, detail: str, *, errors: Iterable[Mapping[str, str]] | None = None, title: str | None = None,
                 type_: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.title = title
        self.type = type_
        self.extra = extra


class BadRequest(DomainError):
    """The request cannot be understood as it is (a malformed value the schema could not catch)."""


class Forbidden(DomainError):
    """The person may not do this, although they may see the thing."""


class NotFound(DomainError):
    """The thing does not exist, or the person may not see it (the two are never told apart)."""


class Conflict(DomainError):
    """The thing's present state does not allow this change (in use, already converted, a duplicate...)."""


class ChangedMeanwhile(DomainError):
    """Somebody else changed the thing after it was read: read it again and retry (a retry may succeed)."""


class TooLarge(DomainError):
    """The input is larger than this operation accepts."""


class Invalid(DomainError):
    """The input breaks a rule; ``errors`` names each offending field."""

    @classmethod
    def of_field(cls, field: str, message: str, detail: str | None = None, **extra: Any) -> Invalid:
        """One offending field; the detail is ``"<field>: <message>"`` unless given."""
        return cls(detail or f"{field}: {message}", errors=[{"field": field, "message": message}], **extra)


class UnknownReference(Invalid):
    """A field names a thing that does not exist (as far as this service knows): ``There is no
    <what> with id '<value>'.``, naming the field."""

    def __init__(self, field: str, what: str, value: str) -> None:
        message = f"There is no {what} with id {value!r}."
        super().__init__(message, errors=[{"field": field, "message": message}])


class Unavailable(DomainError):
    """Something this depends on is not there right now; the same request may succeed later."""

    def __init__(self, detail: str, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = retry_after


__all__ = ["BadRequest", "ChangedMeanwhile", "Conflict", "DomainError", "Forbidden", "Invalid", "NotFound",
           "TooLarge", "Unavailable", "UnknownReference"]
