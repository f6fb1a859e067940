"""Starter data, loaded by ``crm-service catalogue migrate`` after the migrations.

Two one-off steps, each marked done in ``catalogue_meta`` so it runs once per database and
never again - an administrator's later changes and deletions stay as they are:

* ``protected_roles``: the ``MAIN`` and ``SIGN`` roles of both kinds. The API contract says
  the roles tables start with them and other services rely on their codes, so they are
  loaded even when the starter configuration is switched off.
* ``starter_configuration``: stage groups, stages, priorities and sources of both kinds, in
  English and Dutch. ``CRM_CATALOGUE_SEED=false`` skips it (for a database that is to be
  configured from scratch; the setting is declared in crm_kit.settings).

Everything goes through the same rules as the API, in one transaction, with an event for
every entity, so other services' read models get the starter data like any other change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_catalogue.journal import Journal
from crm_catalogue.rules import save_entry, save_stage
from crm_catalogue.tables import KINDS, catalogue_meta
from crm_kit.db import Database, utcnow
from crm_kit.settings import Settings

log = logging.getLogger(__name__)

SEED_ENV = "CRM_CATALOGUE_SEED"

Names = tuple[str, str, str]  # code, English, Dutch

PROTECTED_ROLES: list[Names] = [("MAIN", "Main contact", "Hoofdcontactpersoon"),
                                ("SIGN", "Signing authority", "Tekenbevoegde")]
STAGE_GROUPS: list[Names] = [("OPEN", "Open", "Open"), ("CLOSED", "Closed", "Gesloten")]
PRIORITIES: list[Names] = [("LOW", "Low", "Laag"), ("NORMAL", "Normal", "Normaal"), ("HIGH", "High", "Hoog")]
SOURCES: list[Names] = [("WEBSITE", "Website", "Website"), ("REFERRAL", "Referral", "Doorverwijzing"),
                        ("EVENT", "Event", "Evenement"), ("COLD_CALL", "Cold call", "Koude acquisitie"),
                        ("LINKEDIN", "LinkedIn", "LinkedIn")]
_END = {"is_end": True}
_DEFAULT_END = {"is_end": True, "is_default_end": True}
# (code, English, Dutch), stage group code, colour, flags - in pipeline order.
STAGES: dict[str, list[tuple[Names, str, str, dict[str, bool]]]] = {
    "lead": [
        (("NEW", "New", "Nieuw"), "OPEN", "#3B82F6", {"is_default": True}),
        (("CONTACTED", "Contacted", "Gecontacteerd"), "OPEN", "#06B6D4", {}),
        (("QUALIFIED", "Qualified", "Gekwalificeerd"), "OPEN", "#8B5CF6", {}),
        (("CONVERTED", "Converted", "Geconverteerd"), "CLOSED", "#22C55E", _DEFAULT_END),
        (("DISQUALIFIED", "Disqualified", "Gediskwalificeerd"), "CLOSED", "#94A3B8", _END),
    ],
    "opportunity": [
        (("PROSPECTING", "Prospecting", "Prospectie"), "OPEN", "#3B82F6", {"is_default": True}),
        (("PROPOSAL", "Proposal", "Voorstel"), "OPEN", "#F59E0B", {}),
        (("NEGOTIATION", "Negotiation", "Onderhandeling"), "OPEN", "#8B5CF6", {}),
        (("WON", "Won", "Gewonnen"), "CLOSED", "#22C55E", _DEFAULT_END),
        (("LOST", "Lost", "Verloren"), "CLOSED", "#EF4444", _END),
    ],
}


def _names(en: str, nl: str) -> dict[str, str]:
    return {"en": en, "nl": nl}


def _entries(session: Session, journal: Journal, kind: str, table: str, entries: list[Names],
             protected: bool = False) -> dict[str, str]:
    """Create ``entries`` in ``kind``'s ``table``; returns code -> id."""
    return {code: save_entry(session, journal, kind, table, {"code": code, "names": _names(en, nl)},
                             protected=protected)
            for code, en, nl in entries}


def load_protected_roles(session: Session, journal: Journal) -> None:
    """The roles every record's contacts may have: MAIN and SIGN, which cannot be removed."""
    for kind in KINDS:
        _entries(session, journal, kind, "roles", PROTECTED_ROLES, protected=True)


def load_starter_configuration(session: Session, journal: Journal) -> None:
    """Stage groups, stages, priorities and sources of both kinds."""
    for kind in KINDS:
        groups = _entries(session, journal, kind, "stage_groups", STAGE_GROUPS)
        for (code, en, nl), group, color, flags in STAGES[kind]:
            save_stage(session, journal, kind, {"code": code, "names": _names(en, nl), "stage_group_id": groups[group],
                                                "color": color, **flags})
        _entries(session, journal, kind, "priorities", PRIORITIES)
        _entries(session, journal, kind, "sources", SOURCES)


def load_starter_data(settings: Settings) -> None:
    """The ``after_migrate`` step: run each one-off step this database has not had, in one transaction."""
    steps: list[tuple[str, Callable[[Session, Journal], None]]] = [("protected_roles", load_protected_roles)]
    if settings.get(SEED_ENV, True):
        steps.append(("starter_configuration", load_starter_configuration))
    else:
        log.info("%s is off: the starter configuration is not loaded", SEED_ENV)
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            journal = Journal(session, None)  # the catalogue itself
            for key, load in steps:
                if _done(session, key):
                    continue
                # The marker goes in first: a concurrent migrate blocks on it, then fails and rolls back.
                session.execute(catalogue_meta.insert().values(key=key, done_at=utcnow()))
                load(session, journal)
                log.info("catalogue starter data loaded: %s", key)
            journal.publish()
    except IntegrityError:
        with database.transaction() as session:
            if not all(_done(session, key) for key, _load in steps):
                raise
        log.info("another migrate run loaded the catalogue starter data at the same time; nothing to do")
    finally:
        database.dispose()


def _done(session: Session, key: str) -> bool:
    return session.execute(select(catalogue_meta.c.key).where(catalogue_meta.c.key == key)).first() is not None
