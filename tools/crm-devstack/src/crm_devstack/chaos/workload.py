"""The chaos workload: the configuration it needs, and concurrent clients that retry safely.

Setup (through the gateway, like an administrator): per kind, four stages of its own
(``W1``/``W2`` to work in, ``H`` the hand-off, ``Q`` where automation puts a handed-off
record), a source that triggers watch (``S``) and one they do not (``N``), two groups, a
contact role (``R``), and three triggers whose conditions name ``S``:

- ``created`` -> ``add_to_group`` G1;
- ``stage_changed`` to ``H`` -> ``set_stage`` ``Q``;
- ``stage_changed`` to ``Q`` -> ``add_to_group`` G2 (fired by the previous trigger's change).

Each client creates records (a POST with an ``Idempotency-Key``, retried with the same key and
body until it gets an answer) and moves its own records through ``W1``/``W2`` and finally to
``H`` (a PATCH with ``If-Match``); now and then it links its contact (one per client) to one
of its records (at most once each, a POST with an ``Idempotency-Key``): linking events, which
the webhooks receiver must get too. When a PATCH gets no clear answer (412, 5xx, a dropped
connection) the client reads the record's stage history and decides from the number of
user moves in it whether its change was applied, so every move is made exactly once. After
the hand-off a client never touches the record again: only the triggers change it, so the
expected end state of every record is known exactly (``Ledger``).

Read-your-writes: each client sends back the last ``Consistency-Token`` it got (the gateway
merges every write into it), and right after a create it reads the record's contacts tab,
served by the linking service, which learns of records from Kafka. Every request about the
client's own records (that read, the reads of a record and its history, the stage changes) is
counted by operation, and so is every 404 or 422 answer to one (``Stats.refused``): with the
token none may come, whatever fails meanwhile (a 503 is retried like any other). A refused
request wrote nothing, so it is asked again; the run goes on and the report says how many.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

KINDS = {"lead": "leads", "opportunity": "opportunities"}
# Answers after which a request is simply sent again (an Idempotency-Key or a re-read makes
# that safe): rate limiting, a service or its database away, a gateway timeout.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Refusals that must never answer a request about the client's own writes (read-your-writes).
REFUSALS = frozenset({404, 422})
TOKEN_HEADER = "Consistency-Token"  # noqa: S105 - a header name (crm_gateway.consistency)
REQUEST_TIMEOUT = 30.0
EXAMPLES = 5


class WorkloadError(RuntimeError):
    """The platform answered something no retry can fix (a 4xx the workload did not expect)."""


@dataclass
class KindSetup:
    """The catalogue entries and triggers of one kind."""

    kind: str
    stages: dict[str, str]  # W1, W2, H, Q -> stage id
    watched_source: str  # S: triggers' conditions name it
    other_source: str  # N: no trigger fires for these records
    created_group: str  # G1
    qualified_group: str  # G2
    role: str  # R: the role of the clients' contacts on records
    triggers: dict[str, str] = field(default_factory=dict)  # created, handoff, qualified -> trigger id

    @property
    def plural(self) -> str:
        return KINDS[self.kind]


@dataclass
class RecordLedger:
    """What one client did to one record, as far as it was told."""

    kind: str
    id: str
    title: str
    watched: bool  # created with the watched source S
    stage: str  # the stage id the client last moved it to (or its default stage)
    user_moves: int = 0  # stage changes the client made (beyond creation)
    moves_planned: int = 0  # W1/W2 moves before the hand-off
    handed_off: bool = False
    linked: bool = False  # the client's contact is on it


@dataclass
class Stats:
    """Counts of one client (merged at the end)."""

    operations: Counter[str] = field(default_factory=Counter)  # create, stage_change, catalogue_write
    retries: int = 0  # requests sent again after no clear answer
    replayed: int = 0  # answers with Idempotent-Replayed (the first attempt had been applied)
    decided_by_reading: int = 0  # ambiguous PATCHes settled by reading the history
    applied_unseen: int = 0  # ... and found to have been applied after all
    statuses: Counter[int] = field(default_factory=Counter)  # retried statuses (0: no connection)
    unexpected: list[str] = field(default_factory=list)  # answers that are a bug
    # Requests about the client's own writes, by operation (stage_change, read, history_read,
    # linked_read), and their 404/422 answers, which read-your-writes rules out.
    own_requests: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    refusal_examples: list[str] = field(default_factory=list)

    def merge(self, other: Stats) -> None:
        self.operations.update(other.operations)
        self.retries += other.retries
        self.replayed += other.replayed
        self.decided_by_reading += other.decided_by_reading
        self.applied_unseen += other.applied_unseen
        self.statuses.update(other.statuses)
        self.unexpected.extend(other.unexpected)
        self.own_requests.update(other.own_requests)
        self.refused.update(other.refused)
        self.refusal_examples.extend(other.refusal_examples[:max(0, EXAMPLES - len(self.refusal_examples))])


class Api:
    """A client of the gateway (one per thread: a requests.Session is not thread-safe). It sends
    back the last consistency token it got in the ``Consistency-Token`` header."""

    def __init__(self, base_url: str, headers: dict[str, str], stats: Stats, stop: threading.Event,
                 *, give_up_after: float = 180.0) -> None:
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.stats = stats
        self.stop = stop
        self.give_up_after = give_up_after
        self.token: str | None = None  # the last Consistency-Token a successful write answered

    def once(self, method: str, path: str, *, own: str | None = None, **kw: Any) -> requests.Response | None:
        """One attempt; None when no answer came (connection refused, reset, timed out). ``own``
        names the operation when the request is about the client's own writes: it is counted,
        and so is a 404/422 answer to it."""
        headers = dict(kw.pop("headers", None) or {})
        if self.token:
            headers[TOKEN_HEADER] = self.token
        try:
            response = self.session.request(method, self.base + path, headers=headers, timeout=REQUEST_TIMEOUT,
                                            **kw)
        except requests.RequestException:
            return None
        token = response.headers.get(TOKEN_HEADER)
        if token and 200 <= response.status_code < 300:
            self.token = token
        if own is not None:
            self.stats.own_requests[own] += 1
            if response.status_code in REFUSALS:
                self.stats.refused[own] += 1
                if len(self.stats.refusal_examples) < EXAMPLES:
                    self.stats.refusal_examples.append(
                        f"{own}: {method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def until_answered(self, method: str, path: str, ok: Callable[[requests.Response], bool], *,
                       own: str | None = None, **kw: Any) -> requests.Response:
        """Send the same request until ``ok(response)``; retried statuses and lost connections
        are counted; any other answer is a WorkloadError, but for a 404/422 to a request about
        the client's own writes (``own``), which is counted as refused and asked again. Only for
        requests that are safe to repeat: reads, and POSTs with an Idempotency-Key."""
        deadline = time.monotonic() + self.give_up_after
        delay = 0.1
        while True:
            response = self.once(method, path, own=own, **kw)
            if response is not None and ok(response):
                if response.headers.get("Idempotent-Replayed"):
                    self.stats.replayed += 1
                return response
            status = 0 if response is None else response.status_code
            if own is not None and status in REFUSALS:
                pass  # counted by once() (the report fails the run); a refusal wrote nothing
            elif status and status not in RETRY_STATUSES:
                raise WorkloadError(f"{method} {path}: HTTP {status}: {_text(response, 500)}")
            else:
                self.note_retry(status, f"{method} {path}", response)
            if time.monotonic() > deadline:
                raise WorkloadError(f"{method} {path}: no answer within {self.give_up_after:g} s (last {status})")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def note_retry(self, status: int, what: str, response: requests.Response | None) -> None:
        self.stats.retries += 1
        self.stats.statuses[status] += 1
        if status == 500:  # the contract: never a 500; a database restart is a 503
            self.stats.unexpected.append(f"{what}: HTTP 500: {_text(response, 300)}")


def _text(response: requests.Response | None, limit: int) -> str:
    """The start of an answer's body for a report (a 4xx/5xx ``Response`` is falsy: test for None)."""
    return response.text[:limit] if response is not None else ""


# --------------------------------------------------------------------------- setup


def _created(response: requests.Response) -> bool:
    return response.status_code == 201


def _post_until_known(api: Api, path: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """POST (with one Idempotency-Key) until the receiving service's catalogue copy knows every
    id in the body: 409/422 mean "not yet" here, the copies are fed by events (only 2xx answers
    are kept for a key, so the same key serves every attempt)."""
    key = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    while True:
        response = api.once("POST", path, json=body, headers={"Idempotency-Key": key})
        if response is not None and response.status_code == 201:
            return dict(response.json())
        status = 0 if response is None else response.status_code
        if status not in (0, 409, 422, *RETRY_STATUSES) or time.monotonic() > deadline:
            raise WorkloadError(f"setup: POST {path} {body}: HTTP {status}: {_text(response, 500)}")
        time.sleep(0.3)


def configure(api: Api, tag: str) -> dict[str, KindSetup]:
    """Create the stages, sources, groups and triggers of the run (see the module docstring)."""
    setups: dict[str, KindSetup] = {}
    for kind in KINDS:
        def entry(table: str, code: str, kind: str = kind) -> str:
            body = {"names": {"en": f"Chaos {code} {tag}"}, "code": f"CH{tag}{code}"}
            return str(_post_until_known(api, f"/v1/{kind}-tables/{table}", body)["id"])

        stages = {code: str(_post_until_known(api, f"/v1/{kind}-stages", {
            "names": {"en": f"Chaos {code} {tag}"}, "code": f"CH{tag}{code}", "index": 900 + n})["id"])
            for n, code in enumerate(("W1", "W2", "H", "Q"))}
        setups[kind] = KindSetup(kind, stages, entry("sources", "S"), entry("sources", "N"),
                                 entry("groups", "G1"), entry("groups", "G2"), entry("roles", "R"))
    for kind, setup in setups.items():
        watched = {"source_id": setup.watched_source}
        rules = {
            "created": ({"type": "created"}, [{"type": "add_to_group", "group_id": setup.created_group}]),
            "handoff": ({"type": "stage_changed", "stage_id": setup.stages["H"]},
                        [{"type": "set_stage", "stage_id": setup.stages["Q"]}]),
            "qualified": ({"type": "stage_changed", "stage_id": setup.stages["Q"]},
                          [{"type": "add_to_group", "group_id": setup.qualified_group}]),
        }
        for name, (event, actions) in rules.items():
            body = {"name": f"Chaos {kind} {name} {tag}", "kind": kind, "active": True, "event": event,
                    "conditions": watched, "actions": actions}
            setup.triggers[name] = str(_post_until_known(api, "/v1/triggers", body)["id"])
    return setups


# --------------------------------------------------------------------------- clients


class Pace:
    """At most ``rate`` operations a second over all clients together (None: as fast as they go)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(self._next, now)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


class Client:
    """One concurrent user: creates records and moves them, each change exactly once."""

    def __init__(self, number: int, api: Api, setups: dict[str, KindSetup], *, tag: str, seed: int,
                 counter: Callable[[], int], keep_going: Callable[[], bool], pace: Pace | None = None) -> None:
        self.number = number
        self.api = api
        self.setups = setups
        self.tag = tag
        self.random = random.Random(seed * 1000 + number)  # noqa: S311 - choices, not secrets
        self.counter = counter  # counts one finished operation, returns the total
        self.keep_going = keep_going
        self.pace = pace or Pace(None)
        self.records: list[RecordLedger] = []
        self.active: list[RecordLedger] = []
        self.serial = 0
        self.contact: str | None = None  # made at the first link
        self.error: BaseException | None = None

    @property
    def stats(self) -> Stats:
        return self.api.stats

    def run(self) -> None:
        try:
            while self.keep_going() and not self.api.stop.is_set():
                self.step()
        except BaseException as exc:  # noqa: BLE001 - reported by the orchestrator
            self.error = exc

    def step(self) -> None:
        self.pace.wait()
        roll = self.random.random()
        if roll < 0.01:
            self.catalogue_write()
        elif roll < 0.06 and any(not r.linked for r in self.active):
            self.link(self.random.choice([r for r in self.active if not r.linked]))
        elif len(self.active) < 3 or roll < 0.25:
            self.create()
        else:
            self.advance(self.random.choice(self.active))
        self.counter()

    def create(self) -> RecordLedger:
        kind = self.random.choice(list(self.setups))
        setup = self.setups[kind]
        self.serial += 1
        watched = self.random.random() < 0.8
        title = f"chaos {self.tag} c{self.number} #{self.serial}"
        body: dict[str, Any] = {"title": title,
                                "source_id": setup.watched_source if watched else setup.other_source}
        response = self.api.until_answered("POST", f"/v1/{setup.plural}", _created, json=body,
                                           headers={"Idempotency-Key": uuid.uuid4().hex})
        record = response.json()
        ledger = RecordLedger(kind, record["id"], title, watched, record["stage"]["id"],
                              moves_planned=self.random.randint(0, 3))
        self.records.append(ledger)
        self.active.append(ledger)
        self.stats.operations["create"] += 1
        self.read_linked(ledger)
        return ledger

    def read_linked(self, record: RecordLedger) -> None:
        """The record's contacts tab, from the linking service (which hears of the record through
        Kafka): with the token never a 404, however far behind linking is."""
        self.api.until_answered("GET", f"/v1/{self.setups[record.kind].plural}/{record.id}/contacts",
                                lambda r: r.status_code == 200, own="linked_read")

    def advance(self, record: RecordLedger) -> None:
        stages = self.setups[record.kind].stages
        if record.user_moves < record.moves_planned:
            target = stages["W2"] if record.stage == stages["W1"] else stages["W1"]
        else:
            target = stages["H"]
        self.move(record, target)
        if target == stages["H"]:
            record.handed_off = True
            self.active.remove(record)

    def move(self, record: RecordLedger, target: str) -> None:
        """PATCH the stage with If-Match; on anything but 200, decide from the history."""
        path = f"/v1/{self.setups[record.kind].plural}/{record.id}"
        version = self.current_version(path)
        deadline = time.monotonic() + self.api.give_up_after
        while True:
            response = self.api.once("PATCH", path, own="stage_change", json={"stage_id": target},
                                     headers={"If-Match": f'"{version}"'})
            if response is not None and response.status_code == 200:
                break
            status = 0 if response is None else response.status_code
            if status not in (412, *REFUSALS, *RETRY_STATUSES):
                raise WorkloadError(f"PATCH {path}: HTTP {status}: {_text(response, 500)}")
            if status in REFUSALS:
                time.sleep(0.2)  # counted by once(); decided from the history like any unclear answer
            elif status != 412:
                self.api.note_retry(status, f"PATCH {path}", response)
            self.stats.decided_by_reading += 1
            if self.user_moves_in_history(path) == record.user_moves + 1:
                self.stats.applied_unseen += 1
                break  # it was applied: the answer was lost, not the change
            if time.monotonic() > deadline:
                raise WorkloadError(f"PATCH {path}: not applied within {self.api.give_up_after:g} s")
            version = self.current_version(path)
        record.user_moves += 1
        record.stage = target
        self.stats.operations["stage_change"] += 1

    def current_version(self, path: str) -> int:
        return int(self.api.until_answered("GET", path, lambda r: r.status_code == 200, own="read").json()["version"])

    def user_moves_in_history(self, path: str) -> int:
        items = self.api.until_answered("GET", f"{path}/stage-history", lambda r: r.status_code == 200,
                                        own="history_read").json()["items"]
        return sum(1 for item in items if item["cause"] == "user" and item["from_stage_id"] is not None)

    def link(self, record: RecordLedger) -> None:
        """Put the client's contact on ``record`` (the linking service knows the record from Kafka:
        with the token, at once; 409/422 would mean "not yet" and are asked again)."""
        if self.contact is None:
            self.contact = str(_post_until_known(self.api, "/v1/contacts", {
                "first_name": "Chaos", "last_name": f"{self.tag} c{self.number}"})["id"])
        setup = self.setups[record.kind]
        _post_until_known(self.api, f"/v1/{setup.plural}/{record.id}/contacts",
                          {"contact_id": self.contact, "role_id": setup.role})
        record.linked = True
        self.stats.operations["link"] += 1

    def catalogue_write(self) -> None:
        """A new attribute: catalogue events go on while the copies are being checked."""
        kind = self.random.choice(list(self.setups))
        self.serial += 1
        body = {"names": {"en": f"Chaos attribute {self.tag} c{self.number} #{self.serial}"},
                "code": f"CH{self.tag}A{self.number}x{self.serial}"}
        self.api.until_answered("POST", f"/v1/{kind}-tables/attributes", _created, json=body,
                                headers={"Idempotency-Key": uuid.uuid4().hex})
        self.stats.operations["catalogue_write"] += 1
