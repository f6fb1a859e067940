"""The one place where catalogue entities become events (``CatalogueEntry`` on the catalogue topic).

Every event carries the whole entity as it is after the change; the topic is compacted, so
the latest event per id is the entity's state, and a deletion is an entry with
``deleted = true``. Read models of other services depend on exactly these fields. Who made
the change (a user, or the catalogue itself for the starter data) is mapped here too.
"""

from __future__ import annotations

from typing import Any

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm_catalogue.views import View
from crm_events.envelope import new_envelope
from crm_kit.identity import Identity

PRODUCER = "catalogue"
SYSTEM = Actor(kind="system", name="catalogue")

# Entity-specific fields, carried in ``attributes`` (a Struct).
_STAGE_ATTRIBUTES = ("is_default", "is_end", "is_default_end", "color", "remarks", "procedure_id", "stage_group_id",
                     "email_template_ids", "document_template_ids")
_TEMPLATE_ATTRIBUTES = ("name", "subject", "body", "visible_at", "stage_ids")


def actor_of(identity: Identity | None) -> Actor:
    """The user who made the change, as events name them; ``None``: the catalogue itself (starter data)."""
    if identity is None:
        return SYSTEM
    return Actor(user_id=identity.user_id, name=identity.name, office_id=identity.office_id, kind="user")


def catalogue_entry(aggregate: str, view: View, *, deleted: bool = False) -> CatalogueEntry:
    """The event payload of a stage, table entry or template ``view``."""
    if aggregate == "template":
        # Templates belong to no kind and have no code, names, order or active flag.
        entry = CatalogueEntry(id=view["id"], kind="", entity="template", code="", index=0, active=True)
        attributes: dict[str, Any] = {"template_kind": view["kind"], **{k: view[k] for k in _TEMPLATE_ATTRIBUTES}}
    else:
        entity = "stage" if aggregate == "stage" else view["table_name"]
        entry = CatalogueEntry(id=view["id"], kind=view["kind"], entity=entity, code=view["code"],
                               names=view["names"], index=view["index"], active=view["active"])
        keys = _STAGE_ATTRIBUTES if aggregate == "stage" else ("protected",)
        attributes = {k: view[k] for k in keys}
    entry.deleted = deleted
    entry.version = view["version"]
    entry.attributes.update(attributes)
    return entry


def entry_event(aggregate: str, what: str, view: View, identity: Identity | None) -> Envelope:
    """The event ``catalogue.<aggregate>.<what>`` (created, updated, deleted) of ``view``, made by
    ``identity``; its Kafka key is the entity id (the envelope's aggregate id)."""
    payload = catalogue_entry(aggregate, view, deleted=what == "deleted")
    return new_envelope(f"catalogue.{aggregate}.{what}", aggregate, view["id"], view["version"], payload,
                        actor=actor_of(identity), producer=PRODUCER)
