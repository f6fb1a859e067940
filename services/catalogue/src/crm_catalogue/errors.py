"""What the catalogue's rules say when they say no, in the catalogue's words and without HTTP.

Each refusal is a subclass of a ``crm_kit.errors`` category; the web edge maps the category to
its status (Invalid 422, Conflict 409, NotFound 404) and a version clash is the kit's
``ChangedMeanwhile`` (412). The detail texts and extension members (``stages``, ``records``,
``stage_ids``) are part of the API contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crm_kit.errors import ChangedMeanwhile, Conflict, Invalid, NotFound

__all__ = [
    "ChangedMeanwhile",
    "CodeTaken",
    "DefaultStageRequired",
    "EntryInUse",
    "InactiveDefaultStage",
    "InvalidFields",
    "LinksStranded",
    "ProtectedEntry",
    "StageInUse",
    "UnknownEntity",
    "UnknownTable",
]


class InvalidFields(Invalid):
    """Fields of a body break the rules; ``errors`` names every one (the detail the first)."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        first = errors[0]
        super().__init__(f"{first['field']}: {first['message']}", errors=errors)


class CodeTaken(Conflict):
    """Another stage or table entry of the same scope has this code, whatever its case."""


class ProtectedEntry(Conflict):
    """A protected table entry (the MAIN and SIGN roles) cannot lose its code, be deactivated or deleted."""


class EntryInUse(Conflict):
    """Stages refer to the table entry (``stages``: their codes), so it cannot be deleted."""


class DefaultStageRequired(Conflict):
    """A kind always has a default and a default end stage: the holder cannot give the flag up
    or be deleted, another stage takes the flag over instead."""


class InactiveDefaultStage(Conflict):
    """The default (end) stage must be active."""


class StageInUse(Conflict):
    """Records are in the stage (``records``: how many), so it cannot be deleted."""


class LinksStranded(Conflict):
    """A template change would leave it linked to stages it can no longer be visible at (``stage_ids``)."""


class UnknownEntity(NotFound):
    """No stage, table entry or template with this id (in this collection)."""


class UnknownTable(NotFound):
    """A table name that is not one of the 8 tables."""
