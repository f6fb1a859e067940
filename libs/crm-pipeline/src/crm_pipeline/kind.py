"""What differs between leads and opportunities, as data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecordKind:
    """One kind of pipeline record: ``lead`` or ``opportunity``."""

    kind: str  # "lead": event types are "<kind>.created", ...
    plural: str  # "leads": URL segment, table name, permission prefix
    topic: str  # the topic the service publishes on

    @property
    def collection_path(self) -> str:
        return f"/v1/{self.plural}"

    def permission(self, action: str) -> str:
        return f"{self.plural}:{action}"

    def event_type(self, what: str) -> str:
        return f"{self.kind}.{what}"
