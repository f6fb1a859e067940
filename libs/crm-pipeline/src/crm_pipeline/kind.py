"""What differs between leads and opportunities, as data."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from crm_events.topics import commands_for, topic_of

# Fields only opportunities have (API.md: "Opportunities also: ...").
OPPORTUNITY_FIELDS = ("amount", "currency", "probability", "expected_close_date", "lead_id")


@dataclass(frozen=True)
class RecordKind:
    """One kind of pipeline record: ``lead`` or ``opportunity``."""

    kind: str  # "lead": event types are "<kind>.created", ...
    plural: str  # "leads": URL segment, table name, permission prefix

    @cached_property
    def topic(self) -> str:
        """Where the service publishes its records' events (the registry's topic of the service)."""
        return topic_of(self.plural)

    @cached_property
    def commands_topic(self) -> str:
        """Where the triggers service sends commands for this kind."""
        return commands_for(self.plural)

    @property
    def collection_path(self) -> str:
        return f"/v1/{self.plural}"

    @property
    def is_lead(self) -> bool:
        return self.kind == "lead"

    @property
    def own_fields(self) -> tuple[str, ...]:
        """The fields of this kind beyond the common ones."""
        return () if self.is_lead else OPPORTUNITY_FIELDS

    def permission(self, action: str) -> str:
        return f"{self.plural}:{action}"

    def event_type(self, what: str) -> str:
        return f"{self.kind}.{what}"


LEAD = RecordKind(kind="lead", plural="leads")
OPPORTUNITY = RecordKind(kind="opportunity", plural="opportunities")
