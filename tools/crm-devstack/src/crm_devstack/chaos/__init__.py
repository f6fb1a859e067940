"""``make chaos``: fault injection under load, then proof that nothing was lost or duplicated.

Concurrent clients send a steady stream of creates and stage changes through the gateway
(retrying safely: Idempotency-Key on POST, If-Match plus a re-read on PATCH) while triggers act
on them, and in turn the Kafka broker is SIGKILLed and restarted, each worker is SIGKILLed, an
outbox relay dies between publishing and marking, and PostgreSQL restarts. Once everything has
caught up, ``verify`` compares the clients' ledger, the outboxes, the inboxes, the broker and
every read model, reading each service's database directly. The clients carry their
consistency tokens, and no request about a client's own records may be answered 404 or 422
("own writes refused"), whatever fails meanwhile. A webhook receiver in the chaos process
(``webhooks``), subscribed to every event, must get every public event of the run at least once,
signed and in order per record, though it answers every 20th request 500.

``python -m crm_devstack.chaos`` runs it on a PostgreSQL and a Kafka of its own;
``run_chaos`` is the same for a test (tests/e2e/test_chaos.py runs a small one).
"""

from crm_devstack.chaos.faults import FAULT_KINDS, Fault, plan_faults
from crm_devstack.chaos.run import ChaosConfig, ChaosReport, own_infrastructure, run_chaos

__all__ = ["FAULT_KINDS", "ChaosConfig", "ChaosReport", "Fault", "own_infrastructure", "plan_faults", "run_chaos"]
