"""What the pipeline says when it says no, in its own words and without HTTP.

Each error is a category of ``crm_kit.errors``: the web edge answers it with that category's
status (403, 404, 409, 412, 413, 422, 503) and the detail, errors and members given here,
unchanged; the Kafka side decides from the type (a trigger's command is retried on
``ChangedMeanwhile`` and dropped on any other refusal). A reference to a catalogue entry that is
not usable is the catalogue copy's own ``CatalogueReferenceError`` (an ``Invalid``).
"""

from __future__ import annotations

from typing import Any

from crm_kit.errors import (
    ChangedMeanwhile,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unavailable,
    UnknownReference,
)

# -- records ------------------------------------------------------------------------------------


class UnknownRecord(NotFound):
    """No record of the kind has this id, or the caller may not see it (the two are not told apart)."""

    def __init__(self, kind: str, record_id: str) -> None:
        super().__init__(f"No {kind} with id {record_id!r} (or not visible to you).")


class UnknownFile(UnknownReference):
    """A ``company_id``/``contact_id`` names no existing company or contact (as far as this service knows)."""


class TitleRequired(Invalid):
    """A change tried to set a record's title to null."""

    def __init__(self) -> None:
        super().__init__("title cannot be null.", errors=[{"field": "title", "message": "Cannot be null."}])


class NoDefaultStage(Conflict):
    """No stage of the kind is marked as the default, so no record of it can be created."""

    def __init__(self, kind: str, plural: str) -> None:
        super().__init__(f"No default {kind} stage is configured: an administrator must mark one {kind} stage as "
                         f"the default before {plural} can be created.")


class ConvertedLeadStaysInEndStages(Conflict):
    """A converted lead was to move to a stage that is not an end stage."""

    def __init__(self, opportunity_id: str) -> None:
        super().__init__(f"This lead was converted (to opportunity {opportunity_id}): it stays in end stages, and "
                         "the stage it would move to is not one.", opportunity_id=opportunity_id)


class NotInGroup(NotFound):
    """A record was to leave a group it is not a member of."""

    def __init__(self, kind: str, group_id: str) -> None:
        super().__init__(f"This {kind} is not in group {group_id!r}.")


class OtherOffice(Forbidden):
    """Only an admin may put a record in another office than their own."""

    def __init__(self) -> None:
        super().__init__("Only an admin may put a record in another office.")


class MissingPermission(Forbidden):
    """The caller may call the route, but this use of it needs a further permission."""

    def __init__(self, doing: str, permission: str) -> None:
        super().__init__(f"{doing} needs the permission {permission!r}.")


class KeysBusy(Conflict):
    """A concurrent bulk create kept taking the same idempotency keys; the call may be retried."""

    def __init__(self) -> None:
        super().__init__("Another call is creating records with the same keys right now; retry shortly.")


def record_changed(kind: str) -> ChangedMeanwhile:
    """Somebody wrote the record after it was read (its version moved on)."""
    return ChangedMeanwhile(f"The {kind} changed while this request was processed; fetch it again and retry.")


# -- lists ----------------------------------------------------------------------------------------


class InvalidFilter(Invalid):
    """The ``filter`` text does not parse or names what cannot be filtered; ``position`` points at it."""

    def __init__(self, message: str, pointer: str, position: int) -> None:
        super().__init__(f"Invalid filter: {message}", errors=[{"field": "filter", "message": f"{message}\n{pointer}"}],
                         position=position)


class InvalidOrder(Invalid):
    """The ``order_by`` text names what cannot be sorted by."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Invalid order_by: {message}", errors=[{"field": "order_by", "message": message}])


class InvalidPeriod(Invalid):
    """A report's period ends before it starts."""

    def __init__(self) -> None:
        super().__init__("'from' must be before 'to'.", errors=[{"field": "to", "message": "Must be after 'from'."}])


# -- conversion -----------------------------------------------------------------------------------


class AlreadyConverted(Conflict):
    """The lead was converted before."""

    def __init__(self, opportunity_id: str) -> None:
        super().__init__(f"This lead was already converted, to opportunity {opportunity_id}.",
                         opportunity_id=opportunity_id)


class UnknownOpportunity(NotFound):
    """The opportunity a lead was to convert into does not exist or is not visible to the caller."""

    def __init__(self, opportunity_id: str) -> None:
        super().__init__(f"No opportunity with id {opportunity_id!r} (or not visible to you).")


class OpportunityHasLead(Conflict):
    """The opportunity a lead was to convert into has a lead already (``lead_id``: which, when known)."""

    def __init__(self, opportunity_id: str, lead_id: str | None = None) -> None:
        if lead_id is None:  # another conversion into it won the race just now
            super().__init__(f"Opportunity {opportunity_id} has a lead already: another lead was just converted "
                             "into it.")
        else:
            super().__init__(f"Opportunity {opportunity_id} has a lead already ({lead_id}): a lead converts into "
                             "an opportunity that has none.", lead_id=lead_id)


class NoDefaultEndStage(Conflict):
    """No lead stage is the default end stage, so no lead can be converted."""

    def __init__(self) -> None:
        super().__init__("No default end stage is configured for leads: an administrator must mark one lead stage "
                         "as the default end stage before leads can be converted.")


class NoDefaultOpportunityStage(Conflict):
    """No opportunity stage is the default, so a lead cannot be converted into a new opportunity."""

    def __init__(self) -> None:
        super().__init__("No default opportunity stage is configured: an administrator must mark one opportunity "
                         "stage as the default before leads can be converted.")


# -- printing -------------------------------------------------------------------------------------


class PreviewNeedsPermission(Forbidden):
    """Only catalogue administrators may print with a template that is not saved."""

    def __init__(self, permission: str) -> None:
        super().__init__(f"Printing with a template that is not saved needs {permission}.")


class TemplateNotPrintable(Invalid):
    """The template does not exist, or may not print a record of this kind at its stage."""

    def __init__(self, template_id: str, *, exists: bool, kind: str) -> None:
        message = (f"Template {template_id!r} is not visible at this {kind}'s stage." if exists
                   else f"There is no template with id {template_id!r}.")
        super().__init__(message, errors=[{"field": "template_id", "message": message}])


class RenderFailed(Invalid):
    """The template could not be rendered for the record; ``errors`` names the field (and the body's line)."""

    def __init__(self, name: str, field: str, reason: str, line: int | None = None) -> None:
        error: dict[str, Any] = {"field": field, "message": reason}
        if line is not None:
            error["line"] = line  # a number, as the contract has it
        super().__init__(f"The template {name!r} could not be rendered: {reason}", errors=[error])


# -- attachments ----------------------------------------------------------------------------------


class UnknownAttachment(NotFound):
    """The record has no attachment with this id."""

    def __init__(self, attachment_id: str, kind: str) -> None:
        super().__init__(f"No attachment with id {attachment_id!r} on this {kind}.")


class AttachmentContentGone(NotFound):
    """The attachment's row is there, its bytes are not (the store lost them)."""

    def __init__(self) -> None:
        super().__init__("This attachment's content is no longer available.")


class AttachmentTooLarge(TooLarge):
    """The file is larger than ``CRM_MAX_UPLOAD_BYTES``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Attachments may have at most {limit} bytes.")


class StoreUnavailable(Unavailable):
    """The attachment store cannot be reached; the same request may succeed shortly."""

    def __init__(self) -> None:
        super().__init__("The attachment store is unavailable; retry shortly.", retry_after=5)


__all__ = [
    "AlreadyConverted", "AttachmentContentGone", "AttachmentTooLarge", "ConvertedLeadStaysInEndStages",
    "InvalidFilter", "InvalidOrder", "InvalidPeriod", "KeysBusy", "MissingPermission", "NoDefaultEndStage",
    "NoDefaultOpportunityStage", "NoDefaultStage", "NotInGroup", "OpportunityHasLead", "OtherOffice",
    "PreviewNeedsPermission", "RenderFailed", "StoreUnavailable", "TemplateNotPrintable", "TitleRequired",
    "UnknownAttachment", "UnknownFile", "UnknownOpportunity", "UnknownRecord", "record_changed",
]
