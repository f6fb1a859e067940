"""Leads and opportunities as the console sees them: one description, the screens shared.

Everything the two kinds have in common is one implementation; what differs (the words, the
permissions, conversion, amounts) is read from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort
from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class Kind:
    records: str  # the API's collection: leads | opportunities
    kind: str  # the catalogue's kind: lead | opportunity
    title: object  # "Leads" (translated lazily)
    singular: object  # "Lead"
    mine: object  # the overview's scope tabs: "My leads", ...
    office: object
    everything: object
    has_amount: bool  # opportunities: amount, weighted amount
    converts: bool  # leads: + Opportunity

    def permission(self, action: str) -> str:
        return f"{self.records}:{action}"


KINDS = {
    "leads": Kind("leads", "lead", _l("Leads"), _l("Lead"), _l("My leads"), _l("Leads of my office"),
                  _l("All leads"), has_amount=False, converts=True),
    "opportunities": Kind("opportunities", "opportunity", _l("Opportunities"), _l("Opportunity"),
                          _l("My opportunities"), _l("Opportunities of my office"), _l("All opportunities"),
                          has_amount=True, converts=False),
}


def kind_of(records: str) -> Kind:
    """The kind named in a URL (404 for anything else)."""
    found = KINDS.get(records)
    if found is None:
        abort(404)
    return found
