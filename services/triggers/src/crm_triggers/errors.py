"""What the triggers service says when it says no, in its own words and without HTTP.

Each error is a category of ``crm_kit.errors``; the web edge answers it with that category's
status (404, 422) and the detail, errors and members given here, unchanged.
"""

from __future__ import annotations

from crm_kit.errors import Invalid, NotFound


class UnknownTrigger(NotFound):
    """No trigger has this id."""


class UnusableReferences(Invalid):
    """A trigger names ids that are no active catalogue entries of its kind (or keys its kind has
    not, such as ``conditions.lead_id`` on a lead); ``errors`` names each field."""


class KindCannotChange(Invalid):
    """A change of a trigger tried to give it another kind."""

    def __init__(self) -> None:
        super().__init__("A trigger's kind cannot change; create a new trigger instead.",
                         errors=[{"field": "kind", "message": "Cannot change."}])


class UnknownRecord(Invalid):
    """The record a dry run names is not a (live) record of the trigger's kind."""

    def __init__(self, kind: str, record_id: str) -> None:
        message = f"There is no {kind} {record_id!r}."
        super().__init__(message, errors=[{"field": "record_id", "message": message}])


__all__ = ["KindCannotChange", "UnknownRecord", "UnknownTrigger", "UnusableReferences"]
