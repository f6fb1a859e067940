"""Screen 1's list view: a table with search, advanced search, bulk actions and a preview."""

from __future__ import annotations

from typing import Any

from flask import request

from crm_console.kinds import Kind
from crm_console.session import caller, gateway


def list_context(kind: Kind, tab: str) -> dict[str, Any]:
    from crm_console.views.overview import tab_query

    page = gateway().get(caller(), f"/v1/{kind.records}", page_token=request.args.get("page_token"),
                         q=request.args.get("q"), **tab_query(tab))
    return {"items": page.get("items", []), "next_page_token": page.get("next_page_token")}
