"""A kind of pipeline record: its names, and the plug-in of what differs between the kinds.

The pipeline holds what every kind shares; each records service (``crm_leads``,
``crm_opportunities``) defines its ``RecordKind`` with its own differences, as data (``money``,
``link_field``, ``list_filters``, ``example``, ``import_columns``) and hooks (``stage_rule``,
``out_fields``, ``worker_consumers``, ``extend_api``, ``extend_reports``). A hook that builds
routes imports them when it is called, so a worker, which never calls it, loads no web module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from crm_events.topics import commands_for, topic_of

if TYPE_CHECKING:
    from marshmallow import fields
    from sqlalchemy import Table

    from crm_kafka.worker import ConsumerSpec
    from crm_kit.web import Api
    from crm_pipeline.api import RecordsApi
    from crm_pipeline.records import Records

def _no_consumers(records: Records, tables: Mapping[str, Table]) -> list[ConsumerSpec]:
    return []


@dataclass(frozen=True, eq=False)
class RecordKind:
    """One kind of pipeline record (``lead``, ``opportunity``) and what is its own."""

    kind: str  # "lead": event types are "<kind>.created", ...
    plural: str  # "leads": URL segment, table name, permission prefix
    # Amount, currency, probability and expected close date: in the schemas, the filters, the
    # board's and the stage report's sums.
    money: bool = False
    # The column naming the record of the other kind it is linked to (a filter field).
    link_field: str | None = None
    # Equality filters of the list beyond the common ones (query parameters).
    list_filters: tuple[str, ...] = ()
    # A create body, the example of the create and bulk routes.
    example: Mapping[str, Any] = field(default_factory=dict)
    # The columns of the import's example file.
    import_columns: tuple[str, ...] = ("Title",)
    # Raises a DomainError when a record may not move to ``stage`` (whoever moves it).
    stage_rule: Callable[[Any, Any], None] | None = None
    # Read-only fields of the record's representation, after the common ones.
    out_fields: Callable[[], dict[str, fields.Field]] | None = None
    # The worker's consumers beyond the common ones.
    worker_consumers: Callable[[Records, Mapping[str, Table]], list[ConsumerSpec]] = _no_consumers
    # Adds the kind's own routes to its records api (called when the api is built).
    extend_api: Callable[[Api, RecordsApi], None] | None = None
    # Adds the kind's own reports to its reports api (called when the api is built).
    extend_reports: Callable[[Api, Mapping[str, Table]], None] | None = None

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

    def permission(self, action: str) -> str:
        return f"{self.plural}:{action}"

    def event_type(self, what: str) -> str:
        return f"{self.kind}.{what}"


# The names of the two kinds, for the shared code that speaks of both (the conversion saga:
# a lead becomes an opportunity). Names only: each kind's behaviour is its service's plug-in.
LEAD_NAMES = RecordKind(kind="lead", plural="leads")
OPPORTUNITY_NAMES = RecordKind(kind="opportunity", plural="opportunities")
