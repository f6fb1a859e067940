"""HTTP routes of the webhooks service: subscriptions, their delivery log, replay and test.

Everything needs ``webhooks:admin``; a subscription of another office is "not found" (the
``admin`` role sees every office's). The secret is in the answer to create and rotate-secret
only. Domain refusals come from ``subscriptions`` as domain errors; the kit turns them into
problem+json.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from crm_kit.web import Api, ListResult, Reply, RequestContext, SortKey, check_if_match
from crm_kit.web.pagination import PageQuery
from crm_webhooks import subscriptions as subs
from crm_webhooks.schemas import (
    AttemptOut,
    DeliveryQuery,
    EmptyIn,
    QueuedOut,
    ReplayIn,
    SecretOut,
    TestOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from crm_webhooks.signing import Vault
from crm_webhooks.tables import attempts, subscriptions

ADMIN = "webhooks:admin"
# Subscriptions, their queue and log are this service's own tables: those routes never wait for
# its copy of the platform's events to catch up. Not even replay, which reads the event log: an
# event the copy has not taken in yet is queued for the endpoint when it arrives, as every event is.
OWN: dict[str, Any] = {"permission": ADMIN, "read_models": False}
BASE = "/v1/webhooks"
EXAMPLE = {"url": "https://hooks.example.com/crm", "event_types": ["lead.stage_changed"],
           "filter": 'source_id = "3f2c9a10-0000-4000-8000-000000000001"', "description": "Stage changes of web leads"}


def build_webhooks_api() -> Api:
    api = Api("webhooks")
    vaults: dict[tuple[str, ...], Vault] = {}

    def vault(ctx: RequestContext) -> Vault:
        keys = tuple(ctx.settings["CRM_WEBHOOK_SECRETS_KEY"])
        if keys not in vaults:
            vaults[keys] = Vault(keys)
        return vaults[keys]

    def loopback(ctx: RequestContext) -> bool:
        return bool(ctx.settings["CRM_WEBHOOK_ALLOW_LOOPBACK"])

    def shown(ctx: RequestContext, subscription_id: str) -> dict[str, Any]:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        return subs.present(row, subs.backlogs(ctx.session, [row.id]).get(row.id, (0, None)))

    @api.post(BASE, **OWN, body=WebhookIn, response=WebhookOut, status=201, example=EXAMPLE,
              summary="Subscribe an endpoint to events (the answer shows its signing secret, this once)")
    def create_webhook(ctx: RequestContext) -> Reply:
        sub_id, secret = subs.create(ctx.session, ctx.user, vault(ctx), ctx.body, allow_loopback=loopback(ctx))
        return Reply({**shown(ctx, sub_id), "secret": secret}, headers={"Location": f"{BASE}/{sub_id}"})

    @api.get(BASE, **OWN, query=PageQuery, response=WebhookOut, many=True,
             summary="List webhook subscriptions, by url")
    def list_webhooks(ctx: RequestContext) -> ListResult:
        stmt = select(subscriptions).where(subs.visible(ctx.user))
        page = ctx.page(stmt, [SortKey("url", subscriptions.c.url), SortKey("id", subscriptions.c.id)])
        counts = subs.backlogs(ctx.session, [r.id for r in page.rows])
        return ListResult([subs.present(r, counts.get(r.id, (0, None))) for r in page.rows], page.next_page_token)

    @api.get(f"{BASE}/<subscription_id>", **OWN, response=WebhookOut, summary="Read a subscription")
    def get_webhook(ctx: RequestContext, subscription_id: str) -> dict[str, Any]:
        return shown(ctx, subscription_id)

    @api.patch(f"{BASE}/<subscription_id>", **OWN, body=WebhookPatch(partial=True), response=WebhookOut,
               summary="Change a subscription (active: true enables a disabled one, which then gets its backlog)")
    def patch_webhook(ctx: RequestContext, subscription_id: str) -> dict[str, Any]:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        check_if_match(row.version)
        subs.change(ctx.session, ctx.user, row, ctx.body, allow_loopback=loopback(ctx))
        return shown(ctx, row.id)

    @api.delete(f"{BASE}/<subscription_id>", **OWN, status=204,
                summary="Delete a subscription and what it has not delivered yet")
    def delete_webhook(ctx: RequestContext, subscription_id: str) -> None:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        check_if_match(row.version)
        subs.remove(ctx.session, row)

    @api.post(f"{BASE}/<subscription_id>/rotate-secret", **OWN, body=EmptyIn, body_required=False,
              response=SecretOut, status=200,
              summary="A new signing secret (shown this once); the old one also signs for 24 hours")
    def rotate_secret(ctx: RequestContext, subscription_id: str) -> dict[str, Any]:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        secret, until = subs.rotate(ctx.session, ctx.user, vault(ctx), row)
        return {"secret": secret, "previous_valid_until": until}

    @api.get(f"{BASE}/<subscription_id>/deliveries", **OWN, query=DeliveryQuery, response=AttemptOut,
             many=True, summary="The delivery log: attempts, newest first (?result=)")
    def list_deliveries(ctx: RequestContext, subscription_id: str) -> ListResult:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        stmt = select(attempts).where(attempts.c.subscription_id == row.id,
                                      *([attempts.c.result == ctx.query["result"]] if "result" in ctx.query else []))
        page = ctx.page(stmt, [SortKey("id", attempts.c.id, descending=True)],
                        fingerprint=f"{row.id}:{ctx.query.get('result')}")
        return ListResult([r._asdict() for r in page.rows], page.next_page_token)

    @api.post(f"{BASE}/<subscription_id>/replay", **OWN, body=ReplayIn, response=QueuedOut, status=202,
              summary="Send again every event since a time (after what is queued, each record's in order)")
    def replay(ctx: RequestContext, subscription_id: str) -> dict[str, Any]:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        return {"queued": subs.replay(ctx.session, row, ctx.body["since"])}

    @api.post(f"{BASE}/<subscription_id>/test", **OWN, body=EmptyIn, body_required=False, response=TestOut,
              status=202,
              summary="Send a webhook.test event to this endpoint")
    def test_webhook(ctx: RequestContext, subscription_id: str) -> dict[str, Any]:
        row = subs.load(ctx.session, ctx.user, subscription_id)
        return {"event_id": subs.send_test(ctx.session, ctx.user, row)}

    return api
