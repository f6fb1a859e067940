"""The one place where a pipeline record becomes an event payload (rows never reach Kafka)."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from crm.events.v1.records_pb2 import PipelineRecord
from crm_pipeline.kind import RecordKind


def _ts(value: Any) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def snapshot(kind: RecordKind, row: Any, group_ids: list[str]) -> PipelineRecord:
    """The record's whole state after a change (event-carried state transfer)."""
    record = PipelineRecord(
        id=row.id, kind=kind.kind, title=row.title, description=row.description or "",
        owner_id=row.owner_id, office_id=row.office_id, stage_id=row.stage_id,
        stage_group_id=row.stage_group_id or "", version=row.version,
        created_at=_ts(row.created_at), created_by=row.created_by,
        modified_at=_ts(row.modified_at), modified_by=row.modified_by,
        company_id=row.company_id or "", contact_id=row.contact_id or "", source_id=row.source_id or "",
        priority_id=row.priority_id or "", category_id=row.category_id or "",
        procedure_id=row.procedure_id or "", attribute_ids=list(row.attribute_ids or []), group_ids=group_ids,
        amount="" if row.amount is None else f"{row.amount:.2f}", currency=row.currency or "",
        expected_close_date=row.expected_close_date.isoformat() if row.expected_close_date else "",
        lead_id=row.lead_id or "", converted_opportunity_id=row.converted_opportunity_id or "",
        stage_changed_at=_ts(row.stage_changed_at),
    )
    if row.probability is not None:
        record.probability = row.probability
    return record
