"""What linking's rules say when they say no, in the domain's words (no HTTP).

Each refusal is a subclass of a ``crm_kit.errors`` category, named for what went wrong; the
web edge answers it with the category's status (``crm_kit.web.problem``), its ``detail``,
``errors`` and extension members (``reason``, ``role_code``, ``linked_record_id``...). The
words are the API contract's: a class builds them from what it names.

The records consumer (its reactions) retries ``ChangedMeanwhile`` (``ConcurrentChange``): another transaction
made the change impossible for now, and the retry sees that change.
"""

from __future__ import annotations

from typing import Any

from crm_kit.errors import ChangedMeanwhile, Conflict, Forbidden, Invalid, NotFound, UnknownReference

# -- records (access.py) -------------------------------------------------------------------------


class UnknownRecord(NotFound):
    """The lead or opportunity is unknown here, or the caller may not see it (the two are never
    told apart)."""

    def __init__(self, kind: str, record_id: str) -> None:
        super().__init__(f"No {kind} with id {record_id!r} (or not visible to you).")
        self.kind = kind
        self.record_id = record_id


class RecordEditNeeded(Forbidden):
    """Linking files to a record changes the record: it needs ``<records>:edit`` too."""

    def __init__(self, kind: str, permission: str) -> None:
        super().__init__(f"Linking to a {kind} needs the permission {permission!r}.")


# -- files (files.py) ----------------------------------------------------------------------------


class UnknownFile(NotFound):
    """No such file (``maybe_hidden``: or the caller may not see it)."""

    def __init__(self, label: str, file_id: str, *, maybe_hidden: bool = False) -> None:
        super().__init__(f"No {label} with id {file_id!r}" + (" (or not visible to you)." if maybe_hidden else "."))


class InvalidFileFields(Invalid):
    """Fields of a file break its rules (a reference to nothing, an end before its start): every
    one is named, the detail tells the first."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors)


class OnHiddenRecord(Conflict):
    """The change would change what a lead or opportunity the caller cannot see (another office's)
    shows."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, reason="hidden_record")


class FileInUse(Conflict):
    """Records use the file (``used``: how), so it cannot be deleted."""

    def __init__(self, label: str, used: str) -> None:
        super().__init__(f"The {label} cannot be deleted: {used}. Nothing may be left pointing at a deleted {label}; "
                         "take it off those records first.", reason="in_use")


class FileChangedMeanwhile(ChangedMeanwhile):
    """Someone else wrote the file between this request's read and its write."""

    def __init__(self, label: str) -> None:
        super().__init__(f"The {label} changed while this request was processed; fetch it again and retry.")


class ImportKeysBusy(Conflict):
    """A concurrent bulk create is making files with the same idempotency keys."""

    def __init__(self) -> None:
        super().__init__("Another call is creating files with the same keys right now; retry shortly.")


# -- links (links.py) ----------------------------------------------------------------------------


class NotLinked(NotFound):
    """The contact or job order is not on the record."""

    def __init__(self, what: str, file_id: str, kind: str) -> None:
        super().__init__(f"{what} {file_id!r} is not linked to this {kind}.")


class ContactLinkedAlready(Conflict):
    """The contact is on the record already (its role changes with a PATCH)."""

    def __init__(self, contact_id: str, kind: str, plural: str) -> None:
        super().__init__(f"Contact {contact_id!r} is already linked to this {kind}; change its role with PATCH "
                         f"{plural}/{{id}}/contacts/{{contact_id}}.")


class LinkRefused(Conflict):
    """The database refused the link for another reason than the rules checked first: the file
    was deleted meanwhile."""

    def __init__(self, what: str, file_id: str) -> None:
        super().__init__(f"{what} {file_id!r} could not be linked (it was deleted meanwhile?).")


class MainIsTheRecords(Conflict):
    """The main contact is the record's own ``contact_id``: never set, changed or removed from its
    contacts tab (``which``: the current or the new role, when a PATCH names one)."""

    def __init__(self, kind: str, plural: str, which: str = "") -> None:
        super().__init__(f"The {which + ' ' if which else ''}role is MAIN: the main contact is the {kind}'s own "
                         f"contact_id, set on the {kind} (PATCH /v1/{plural}/{{id}}), not from its contact list.",
                         role_code="MAIN")


class IsTheMainContact(Conflict):
    """The contact to unlink is the record's main contact (its ``contact_id``)."""

    def __init__(self, contact_id: str, kind: str) -> None:
        super().__init__(f"Contact {contact_id!r} is the main contact of this {kind} (its contact_id): set another "
                         f"contact_id on the {kind}, or clear it, instead.", role_code="MAIN")


class MainContactChanged(Conflict):
    """The record's main contact changed while this request confirmed it."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"The main contact of this {kind} changed meanwhile; fetch it again.")


class SignTaken(Conflict):
    """The record has its signing authority (``SIGN``) already: at most one."""

    def __init__(self, kind: str, holder: str) -> None:
        super().__init__(f"This {kind} has a signing authority already (contact {holder!r}): a {kind} has at most "
                         "one SIGN contact. Remove that one from its contacts first.", role_code="SIGN",
                         contact_id=holder)


class SignIsNoRoleChange(Conflict):
    """A role change never moves a link to or from ``SIGN`` (``which``: the current or the new role)."""

    def __init__(self, kind: str, plural: str, which: str) -> None:
        super().__init__(f"The {which} role is SIGN: the signing authority is not set on the {kind} from a role "
                         f"change: add it with POST /v1/{plural}/{{id}}/contacts (while the {kind} has none) or "
                         "remove it with DELETE.", role_code="SIGN")


class JobOrderLinkedAlready(Conflict):
    """A job order links to at most one record of each kind; it has one (``linked_to``: named only
    when the caller may see it)."""

    def __init__(self, job_order_id: str, kind: str, linked_to: str | None, *, this_record: bool = False) -> None:
        extra: dict[str, Any] = {"linked_record_kind": kind}
        if linked_to is not None:
            extra["linked_record_id"] = linked_to
        if this_record:
            detail = f"Job order {job_order_id!r} is already linked to this {kind}."
        elif linked_to is None:
            detail = (f"Job order {job_order_id!r} is already linked to another {kind} (one you cannot see): a job "
                      f"order links to at most one {kind}.")
        else:
            detail = (f"Job order {job_order_id!r} is already linked to {kind} {linked_to!r}: a job order links to "
                      f"at most one {kind}. Unlink it there first.")
        super().__init__(detail, **extra)


class ConcurrentChange(ChangedMeanwhile):
    """A constraint refused a change that another transaction made impossible meanwhile; the
    event consumer retries the event (and then sees that change)."""


__all__ = [
    "ConcurrentChange", "ContactLinkedAlready", "FileChangedMeanwhile", "FileInUse", "ImportKeysBusy",
    "InvalidFileFields", "IsTheMainContact", "JobOrderLinkedAlready", "LinkRefused", "MainContactChanged",
    "MainIsTheRecords", "NotLinked", "OnHiddenRecord", "RecordEditNeeded", "SignIsNoRoleChange", "SignTaken",
    "UnknownFile", "UnknownRecord", "UnknownReference",
]
