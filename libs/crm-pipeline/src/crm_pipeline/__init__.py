"""Pipeline records: the behaviour leads and opportunities share, configured by ``RecordKind``.

This is domain code on purpose (the one exception in ``libs/``): the two services only say
which kind they are.
"""

from crm_pipeline.kind import RecordKind
from crm_pipeline.service import pipeline_service

__all__ = ["RecordKind", "pipeline_service"]
