"""What a trigger may say, and which saved triggers would call each other in a loop.

- Every catalogue id a trigger names must be an active entry of the trigger's kind in this
  service's catalogue copy (``UnusableReferences`` naming the field: ``event.stage_id``, ``actions.0.group_id``,
  ``conditions.source_id``).
- Loops are allowed (the engine stops chains at depth 5 and logs ``skipped_loop``) but
  reported: an edge A -> B when one of A's actions can cause B's event (``set_stage X``
  causes ``stage_changed X`` and ``stage_group_changed`` of X's stage group; ``add_to_group G``
  causes ``added_to_group G``), over the active triggers of the same kind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueReferenceError, CatalogueView
from crm_triggers.errors import UnusableReferences
from crm_triggers.tables import trigger_rules

MAX_DEPTH = 5
# Which catalogue table an id-valued key refers to (keys not listed are free ids: owner, office, ...).
_EVENT_REFS = {"group_id": "groups", "stage_id": "stage", "stage_group_id": "stage_groups"}
_ACTION_REFS = {"group_id": "groups", "stage_id": "stage"}
_CONDITION_REFS = {"stage_id": "stage", "stage_group_id": "stage_groups", "source_id": "sources",
                   "priority_id": "priorities", "category_id": "categories", "group_id": "groups"}


def validate_definition(session: Session, view: CatalogueView, kind: str, definition: Mapping[str, Any]) -> None:
    """Refuse (``UnusableReferences``, listing every field) ids that are no active catalogue entry of ``kind``."""
    errors: list[dict[str, str]] = []

    def check(entry_id: str, entity: str, field_name: str) -> None:
        try:
            view.require(session, entry_id, kind=kind, entity=entity, field_name=field_name)
        except CatalogueReferenceError as exc:
            errors.append({"field": field_name, "message": exc.message})

    event = definition["event"]
    for key, entity in _EVENT_REFS.items():
        if key in event:
            check(event[key], entity, f"event.{key}")
    for key, value in sorted(definition.get("conditions", {}).items()):
        if key == "lead_id" and kind != "opportunity":
            errors.append({"field": "conditions.lead_id", "message": "Only opportunities have a lead_id."})
        elif key in _CONDITION_REFS:
            check(value, _CONDITION_REFS[key], f"conditions.{key}")
    for i, action in enumerate(definition["actions"]):
        for key, entity in _ACTION_REFS.items():
            if key in action:
                check(action[key], entity, f"actions.{i}.{key}")
    if errors:
        raise UnusableReferences("; ".join(e["message"] for e in errors), errors=errors)


# -- loops ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    event: Mapping[str, Any]
    actions: Sequence[Mapping[str, Any]]


def _stage_group(session: Session, view: CatalogueView, stage_id: str, cache: dict[str, str | None]) -> str | None:
    if stage_id not in cache:
        entry = view.get(session, stage_id)
        cache[stage_id] = entry.attr("stage_group_id") if entry else None
    return cache[stage_id]


def _causes(action: Mapping[str, Any], event: Mapping[str, Any], group_of: Any) -> bool:
    """Can ``action`` make ``event`` happen?"""
    if action["type"] == "set_stage":
        if event["type"] == "stage_changed":
            return bool(event["stage_id"] == action["stage_id"])
        if event["type"] == "stage_group_changed":
            return bool(group_of(action["stage_id"]) == event["stage_group_id"])
    if action["type"] == "add_to_group" and event["type"] == "added_to_group":
        return bool(event["group_id"] == action["group_id"])
    return False


def _away(action: Mapping[str, Any], event: Mapping[str, Any], group_of: Any) -> bool:
    """Does ``action`` take the record out of the state ``event`` just put it in?"""
    if action["type"] == "set_stage":
        if event["type"] == "stage_changed":
            return bool(action["stage_id"] != event["stage_id"])
        if event["type"] == "stage_group_changed":
            return bool(group_of(action["stage_id"]) != event["stage_group_id"])
    return (action["type"] == "remove_from_group" and event["type"] == "added_to_group"
            and bool(action["group_id"] == event["group_id"]))


def _calls_itself(rule: Rule, group_of: Any) -> bool:
    # Right after its event the record is already in the event's state, so an action that
    # re-applies it changes nothing - unless an earlier action moved the record away first.
    moved = False
    for action in rule.actions:
        if moved and _causes(action, rule.event, group_of):
            return True
        moved = moved or _away(action, rule.event, group_of)
    return False


def find_loops(rules: Iterable[Rule], start: str, group_of: Any) -> list[list[Rule]]:
    """The shortest loop through ``start`` for each rule it calls directly (deduplicated)."""
    by_id = {r.id: r for r in rules}
    if start not in by_id:
        return []
    edges = {a.id: [b.id for b in by_id.values() if b.id != a.id
                    and any(_causes(act, b.event, group_of) for act in a.actions)]
             for a in by_id.values()}
    loops: list[list[Rule]] = []
    if _calls_itself(by_id[start], group_of):
        loops.append([by_id[start]])
    seen: set[frozenset[str]] = set()
    for first in sorted(edges[start], key=lambda i: (by_id[i].name, i)):
        parent: dict[str, str | None] = {first: None}
        queue = deque([first])
        while queue and start not in parent:
            node = queue.popleft()
            for nxt in edges[node]:
                if nxt not in parent:
                    parent[nxt] = node
                    queue.append(nxt)
        if start not in parent:
            continue
        path: list[str] = []
        node_id: str | None = parent[start]
        while node_id is not None:
            path.append(node_id)
            node_id = parent[node_id]
        cycle = [start, *reversed(path)]
        if frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            loops.append([by_id[i] for i in cycle])
    return loops


def loop_warnings(session: Session, view: CatalogueView, kind: str, trigger_id: str,
                  candidate: Rule | None = None) -> list[str]:
    """Warnings for the loops the saved trigger is part of, among the active ones of ``kind``.

    ``candidate`` (an unsaved, active trigger, new or replacing the saved one with its id) is
    judged as if it were saved: the dry validation of ``?validate_only=true``."""
    rows = session.execute(select(trigger_rules).where(trigger_rules.c.kind == kind,
                                                       trigger_rules.c.active.is_(True))).all()
    rules = [Rule(r.id, r.name, r.definition["event"], r.definition["actions"]) for r in rows
             if candidate is None or r.id != candidate.id]
    if candidate is not None:
        rules.append(candidate)
    cache: dict[str, str | None] = {}

    def group_of(stage_id: str) -> str | None:
        return _stage_group(session, view, stage_id, cache)

    warnings = []
    for loop in find_loops(rules, trigger_id, group_of):
        chain = " -> ".join(f"{r.name!r}" for r in [*loop, loop[0]])
        warnings.append(f"These triggers call each other in a loop: {chain}; the chain stops at depth "
                        f"{MAX_DEPTH} and is logged skipped_loop.")
    return warnings
