"""Figure 8: the console's board page of 500 cards against the API calls it makes.

The console renders the overview's board on the server: one ``GET /v1/leads/overview`` of the
tab (its columns' counts and the tab counts), the kind's stages (``GET /v1/lead-stages``, for the
colours and the Move to menu) and the cards, 200 a list call (500 cards: 3 calls). The figure
seeds 500 leads in one stage group through the API as a marketing user of an office of its
own, signs that person in to the console (the development form, as `make run` offers it) and
times the whole board page, GET to last byte from the console's own port, against the same five
API calls made one after another directly against the gateway with the same person's token.
The goal (CONSOLE.md: "a board of 500 cards stays usable"; the issue's <= 1.5x) is reported
with the ratio. The leads are deleted again through the API afterwards.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import requests

from crm_devstack.bench.load import Unexpected, percentile, run_load
from crm_devstack.bench.report import Goal, Row
from crm_devstack.errors import DevstackError
from crm_devstack.stack import CONSOLE

if TYPE_CHECKING:
    from crm_devstack.bench.figures import Bench

BOARD_CARDS = 500
BOARD_GOAL_RATIO = 1.5
LIST_PAGE = 200  # the API's largest page, as the console asks for it
BASELINE = "the page's API calls, direct"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def console_session(console_url: str, user: str, office: str, roles: str) -> requests.Session:
    """A browser-like session signed in to the console through its development form."""
    session = requests.Session()
    page = session.get(f"{console_url}/signin", timeout=30)
    _as_a_browser_on_loopback(session)
    found = _CSRF.search(page.text)
    if page.status_code != 200 or not found:
        raise DevstackError(f"the console's sign-in page answered {page.status_code} without a form "
                            "(is CRM_CONSOLE_DEV_SIGNIN on?)")
    signed = session.post(f"{console_url}/signin/dev", timeout=30, allow_redirects=False,
                          data={"csrf_token": found.group(1), "user": user, "office": office, "roles": roles})
    if signed.status_code not in (302, 303):
        raise DevstackError(f"signing in to the console answered {signed.status_code}: {signed.text[:300]}")
    _as_a_browser_on_loopback(session)
    return session


def _as_a_browser_on_loopback(session: requests.Session) -> None:
    """Browsers send the console's ``Secure`` cookies to http://127.0.0.1 (a secure context);
    requests sends them only over HTTPS, so the bench marks its copies as not secure."""
    for cookie in session.cookies:
        cookie.secure = False


def api_calls(session: requests.Session, gateway: str, headers: dict[str, str], group_id: str) -> int:
    """The calls the board page makes, one after another; returns how many cards they listed."""
    def get(path: str, **params: Any) -> dict[str, Any]:
        r = session.get(gateway + path, params=params, headers=headers, timeout=30)
        if r.status_code != 200:
            raise DevstackError(f"GET {path} answered {r.status_code}: {r.text[:300]}")
        return dict(r.json())

    get("/v1/leads/overview", stage_group_id=group_id)
    get("/v1/lead-stages", page_size=LIST_PAGE)
    cards, token = 0, None
    while True:
        params: dict[str, Any] = {"page_size": LIST_PAGE, "order_by": "modified_at desc", "stage_group_id": group_id}
        if token:
            params["page_token"] = token
        page = get("/v1/leads", **params)
        cards += len(page["items"])
        token = page.get("next_page_token")
        if not token:
            return cards


def figure(bench: Bench) -> list[Row]:
    plan = bench.plan
    samples = plan.samples
    bench.say(f"figure 8: the console's board page of {BOARD_CARDS} leads vs the API calls it makes "
              f"({samples} of each, one at a time)")
    group_id = bench.stages["NEW"].get("stage_group_id")
    if not group_id:
        raise DevstackError("the NEW lead stage has no stage group; the board figure shows one group's tab")
    stage_ids = [s["id"] for s in bench.stages.values()
                 if s.get("stage_group_id") == group_id and s.get("active", True)]
    tag = uuid.uuid4().hex[:8]
    user = office = f"bench-board-{tag}"
    headers = bench.platform.auth(("marketing",), user=user, office=office)
    gateway = bench.gateway
    created: list[str] = []

    async def create(session: aiohttp.ClientSession, n: int) -> None:
        body = {"title": f"Bench board card {n}", "stage_id": stage_ids[n % len(stage_ids)]}
        async with session.post(f"{gateway}/v1/leads", json=body, headers=headers) as response:
            data = await response.read()
            if response.status != 201:
                raise Unexpected(f"status {response.status}", data)
            created.append(json.loads(data)["id"])

    bench.say(f"  seeding {BOARD_CARDS} leads in {len(stage_ids)} stages of one stage group")
    # A few at a time (up to 3 more than BOARD_CARDS: the ones in flight finish; the figure counts them all).
    run_load(create, concurrency=min(4, plan.concurrency), seconds=600, max_operations=BOARD_CARDS)
    try:
        return _measure(bench, headers, user, office, group_id, len(created), samples)
    finally:
        for i in range(0, len(created), 200):
            requests.post(f"{gateway}/v1/leads/bulk", json={"ids": created[i:i + 200], "action": "delete"},
                          headers=headers, timeout=60)


def _measure(bench: Bench, headers: dict[str, str], user: str, office: str, group_id: str, cards: int,
             samples: int) -> list[Row]:
    console_url = bench.platform.api_url(CONSOLE)
    browser = console_session(console_url, user, office, "marketing")
    api = requests.Session()
    url = f"{console_url}/leads"
    params = {"tab": group_id}
    page_bytes = 0

    def board() -> float:
        nonlocal page_bytes
        began = time.perf_counter()
        r = browser.get(url, params=params, timeout=60, allow_redirects=False)
        took = time.perf_counter() - began
        _as_a_browser_on_loopback(browser)  # the console may set its session cookie again
        if r.status_code != 200:
            raise DevstackError(f"the board page answered {r.status_code}: {r.text[:300]}")
        shown = r.text.count('class="board-card"')
        if shown != cards:
            raise DevstackError(f"the board page shows {shown} cards, the API has {cards}")
        page_bytes = len(r.content)
        return took

    def calls() -> float:
        began = time.perf_counter()
        listed = api_calls(api, bench.gateway, headers, group_id)
        took = time.perf_counter() - began
        if listed != cards:
            raise DevstackError(f"the API listed {listed} cards instead of {cards}")
        return took

    page_times: list[float] = []
    api_times: list[float] = []
    for n in range(3 + samples):  # 3 warm-up rounds; the order alternates
        first, second = (board, calls) if n % 2 == 0 else (calls, board)
        a, b = first(), second()
        if n >= 3:
            page_times.append(a if first is board else b)
            api_times.append(b if first is board else a)
    p50 = (_ms(percentile(page_times, 50)), _ms(percentile(api_times, 50)))
    p99 = (_ms(percentile(page_times, 99)), _ms(percentile(api_times, 99)))
    ratio = p50[0] / p50[1] if p50[1] else float("inf")
    met = ratio <= BOARD_GOAL_RATIO
    bench.details["board"] = {
        "cards": cards, "page_bytes": page_bytes, "page_url": f"/leads?tab={group_id}",
        "api_calls": ["GET /v1/leads/overview?stage_group_id=...", f"GET /v1/lead-stages?page_size={LIST_PAGE}",
                      *[f"GET /v1/leads?page_size={LIST_PAGE}&stage_group_id=... (page {k + 1})"
                        for k in range(max(1, -(-cards // LIST_PAGE)))]],
        "page_ms": _summary(page_times), "api_ms": _summary(api_times),
        "goal": {"ratio_p50": round(ratio, 3), "limit": BOARD_GOAL_RATIO, "met": met}}
    bench.say(f"    board page p50 {p50[0]:.1f} ms, its API calls p50 {p50[1]:.1f} ms: {ratio:.2f}x "
              f"(goal <= {BOARD_GOAL_RATIO:g}x: {'met' if met else 'NOT met'})")
    note = (f"{cards} cards in one stage group's tab ({page_bytes // 1024} KiB of HTML), a marketing user signed in "
            f"to the console, GET from its own port; baseline: the overview, the stages and "
            f"{-(-cards // LIST_PAGE)} list pages of {LIST_PAGE} the page asks for, one after another against "
            "the gateway")
    return [Row("board", "p50", "ms", p50[0], BASELINE, p50[1], note,
                Goal(at_most=True, factor=BOARD_GOAL_RATIO, source="issue 16")),
            Row("board", "p99", "ms", p99[0], BASELINE, p99[1])]


def _summary(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50_ms": round(_ms(percentile(values, 50)), 3),
            "p99_ms": round(_ms(percentile(values, 99)), 3), "max_ms": round(_ms(max(values)), 3)}
