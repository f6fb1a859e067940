"""What an import says when it says no, without HTTP (the web edge maps each category to its
status: 404, 409, 422); every refusal changes nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from crm_kit.errors import Conflict, Invalid, NotFound


class UnknownImport(NotFound):
    """No import of the caller's with this id (another user's or office's is not found either)."""

    def __init__(self, job_id: str, collection: str) -> None:
        super().__init__(f"No import with id {job_id!r} among your {collection} imports.")


class ImportStatusForbids(Conflict):
    """The job's status does not allow this step (``reason: import_status``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, reason="import_status")

    @classmethod
    def only_while(cls, job: Mapping[str, Any], what: str, allowed: Iterable[str]) -> ImportStatusForbids:
        return cls(f"The import is {job['status']}: {what} only while it is {' or '.join(allowed)}.")


class ImportTooLarge(Conflict):
    """The rows would make the job larger than an import may be (``reason: import_too_large``)."""

    def __init__(self, limit: int, rows: int, adding: int) -> None:
        super().__init__(f"An import holds at most {limit} rows; this one has {rows} and these {adding} would pass "
                         "that.", reason="import_too_large")


class InvalidImport(Invalid):
    """The columns, rows or mapping sent break a rule; ``errors`` names each field (the detail the first)."""

    @classmethod
    def of(cls, errors: list[dict[str, str]]) -> InvalidImport:
        return cls(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors[:20])


__all__ = ["ImportStatusForbids", "ImportTooLarge", "InvalidImport", "UnknownImport"]
