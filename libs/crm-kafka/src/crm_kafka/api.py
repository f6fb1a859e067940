"""The HTTP edge crm_kafka adds to every domain service (its only module that knows Flask).

``GET /internal/consistency``: the gateway's question to a service about its own events.

"Once your read models have applied these offsets (``Crm-Require-*`` headers, optional), and
your outbox is on Kafka up to row ``upto`` (default: every row committed now), which outbox
id is that, and at which Kafka offsets?" The gateway turns a client's consistency token into
offsets with it, and asks it after composed operations (conversion, the wizard) to cover their
effects in other services. Any valid bearer token may ask; it reveals only counters.
"""

from __future__ import annotations

from typing import Any

from flask import request
from marshmallow import Schema, fields, validate

from crm_kit import consistency
from crm_kit.db import Database
from crm_kit.errors import BadRequest, Unavailable
from crm_kit.web import Api, RequestContext


class PositionQuery(Schema):
    upto = fields.Integer(load_default=None, validate=validate.Range(min=0))


class PositionOut(Schema):
    outbox_id = fields.Integer(required=True)
    positions = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.Integer()))


def build_positions_api(service: str, database: Database, default_wait: float) -> Api:
    """The endpoint above, for ``service`` on ``database``."""
    api = Api("consistency")

    @api.get("/internal/consistency", query=PositionQuery, response=PositionOut, errors=(503,))
    def position(ctx: RequestContext) -> dict[str, Any]:
        """Where this service's outbox stands on Kafka (for the gateway's consistency tokens)."""
        # The kit's view wrapper has already waited for the read models (Crm-Require-Offsets).
        try:
            wait = consistency.wait_from(request.headers, default_wait)
        except consistency.InvalidRequirementError as exc:
            raise BadRequest(str(exc)) from None
        try:
            outbox_id, offsets = consistency.outbox_position(service, database, ctx.query["upto"], wait)
        except consistency.ConsistencyError as exc:
            raise Unavailable(exc.detail, retry_after=consistency.RETRY_AFTER_SECONDS) from None
        return {"outbox_id": outbox_id,
                "positions": {t: {str(p): o for p, o in ps.items()} for t, ps in offsets.items()}}

    return api
