"""Pipeline records: the behaviour leads and opportunities share, configured by ``RecordKind``.

This is domain code on purpose (the one exception in ``libs/``): each of the two services
defines its kind (``crm_leads.kind.LEAD``, ``crm_opportunities.kind.OPPORTUNITY``), the plug-in of
what is its own, and builds the service from it.
"""

from crm_pipeline.kind import RecordKind
from crm_pipeline.service import pipeline_service

__all__ = ["RecordKind", "pipeline_service"]
