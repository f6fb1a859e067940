"""The catalogue (stages, stage groups, the eight tables, templates) as the API gives it, in the
person's language, read once per request."""

from __future__ import annotations

from typing import Any

from flask import g

from crm_console.session import caller, gateway


def _cached(key: str, path: str, **params: Any) -> list[dict[str, Any]]:
    cache = g.setdefault("crm_catalogue", {})
    if key not in cache:
        cache[key] = gateway().all_pages(caller(), path, **params)
    return cache[key]


def stages(kind: str, *, active_only: bool = False) -> list[dict[str, Any]]:
    """A kind's stages in index order."""
    found = sorted(_cached(f"stages:{kind}", f"/v1/{kind}-stages"), key=lambda s: (s.get("index", 0), s["name"]))
    return [s for s in found if s.get("active", True)] if active_only else found


def stage_groups(kind: str) -> list[dict[str, Any]]:
    return sorted(table(kind, "stage-groups"),
                  key=lambda s: (s.get("index", 0), s["name"]))


def table(kind: str, name: str) -> list[dict[str, Any]]:
    """One of the eight tables (roles, sources, priorities, ...)."""
    return _cached(f"table:{kind}:{name}", f"/v1/{kind}-tables/{name}")


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}
