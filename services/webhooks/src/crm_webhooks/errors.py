"""What the webhooks service says when it says no, in its own words and without HTTP.

Each error is a category of ``crm_kit.errors``; the web edge answers it with that category's
status (404, 422) and the detail and errors given here.
"""

from __future__ import annotations

from crm_kit.errors import Invalid, NotFound


class UnknownSubscription(NotFound):
    """No webhook subscription has this id (or the caller's office may not see it)."""

    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"There is no webhook with id {subscription_id!r}.")


class BadTarget(Invalid):
    """The URL is not one deliveries may go to (scheme, host, or the addresses it resolves to)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"url: {message}", errors=[{"field": "url", "message": message}])


class BadEventTypes(Invalid):
    """Unknown event types, or types a filter cannot apply to."""

    def __init__(self, message: str) -> None:
        super().__init__(f"event_types: {message}", errors=[{"field": "event_types", "message": message}])


class BadFilter(Invalid):
    """The filter is not one of the records' filter grammar (``pointer`` shows where)."""

    def __init__(self, message: str, pointer: str, position: int) -> None:
        super().__init__(f"filter: {message}", errors=[{"field": "filter", "message": message}],
                         pointer=pointer, position=position)


__all__ = ["BadEventTypes", "BadFilter", "BadTarget", "UnknownSubscription"]
