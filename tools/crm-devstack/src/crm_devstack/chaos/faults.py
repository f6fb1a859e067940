"""The faults a chaos run injects, in turn, into a running platform.

- ``kafka_kill``: the broker is SIGKILLed, stays down a moment, and starts again on the same
  ports and data;
- ``worker_kill``: one service's worker (its consumers and outbox relay) is SIGKILLed and
  started again;
- ``relay_crash``: one publishing service's worker is replaced by the same worker with a crashing relay
  (``crm_devstack.chaos.faulty_worker --relay-exit-after-publish``), which SIGKILLs itself after
  Kafka confirmed a batch and before the rows are marked sent (those rows are published again
  after the restart); then the plain worker is started again;
- ``postgres_restart``: ``pg_ctl restart -m fast``: every open connection of every service
  is cut while the server restarts.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from crm_devstack.chaos.crashing import RELAY_FAULT_LOG
from crm_devstack.errors import DevstackError
from crm_devstack.kafka import KafkaBroker
from crm_devstack.platform import Platform
from crm_devstack.postgres import PostgresCluster
from crm_devstack.stack import SERVICES
from crm_devstack.supervisor import wait_http_ok
from crm_events.topics import all_topics

FAULT_KINDS = ("kafka_kill", "worker_kill", "relay_crash", "postgres_restart")
PUBLISHERS = tuple(s for s in SERVICES if any(t.owner == s for t in all_topics(include_dlq=False)))
"""The services whose workers run an outbox relay: those that own a topic (the webhooks service
publishes nothing, its worker has no relay to crash; it is killed like every other worker)."""


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # "kafka", "postgres" or a service name

    def __str__(self) -> str:
        return f"{self.kind}({self.target})"


@dataclass
class InjectedFault:
    fault: Fault
    at: float  # seconds since the load started
    seconds: float  # from the fault until the component was back
    after_operations: int


def plan_faults(*, worker_kills: tuple[str, ...] = SERVICES, relay_crashes: tuple[str, ...] = PUBLISHERS,
                kafka_kills: int = 1, postgres_restarts: int = 1) -> list[Fault]:
    """The faults of a run, kinds interleaved so that each one hits a platform still
    recovering from different earlier ones."""
    queues = [
        [Fault("worker_kill", s) for s in worker_kills],
        [Fault("kafka_kill", "kafka")] * kafka_kills,
        [Fault("relay_crash", s) for s in relay_crashes],
        [Fault("postgres_restart", "postgres")] * postgres_restarts,
    ]
    plan: list[Fault] = []
    while any(queues):
        for queue in queues:
            if queue:
                plan.append(queue.pop(0))
    return plan


class FaultInjector:
    """Injects one fault at a time; call from the thread that started the platform."""

    def __init__(self, platform: Platform, kafka: KafkaBroker, postgres: PostgresCluster,
                 nudge: Callable[[str], None], *, relay_deadline: float = 120.0) -> None:
        self.platform = platform
        self.kafka = kafka
        self.postgres = postgres
        self.nudge = nudge  # makes the service write an event (its relay must have one to publish)
        self.relay_deadline = relay_deadline

    def inject(self, fault: Fault) -> None:
        """Inject ``fault`` and return once the component is running again."""
        if fault.kind == "kafka_kill":
            self.kafka.kill()
            time.sleep(2.0)  # producers and consumers notice it is gone
            self.kafka.start(timeout=180)
        elif fault.kind == "worker_kill":
            self.platform.processes.kill(f"{fault.target}-worker", signal.SIGKILL)
            time.sleep(0.5)
            self.platform.processes.restart(f"{fault.target}-worker")
            self._worker_up(fault.target)
        elif fault.kind == "relay_crash":
            self._relay_crash(fault.target)
        elif fault.kind == "postgres_restart":
            self.postgres.restart(timeout=120)
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _relay_crash(self, service: str) -> None:
        name = f"{service}-worker"
        faulty = f"{service}-worker-faulty"
        processes = self.platform.processes
        processes.kill(name, signal.SIGKILL)  # quicker than a clean stop; the faulty worker takes its place
        argv = [sys.executable, "-m", "crm_devstack.chaos.faulty_worker", "--relay-exit-after-publish", service]
        env = self.platform.env_for(service, "worker")
        if faulty in processes.names():
            processes.restart(faulty, env=env)
        else:
            processes.add(faulty, argv, env, self.platform.config.log_path(name))
        deadline = time.monotonic() + self.relay_deadline
        next_nudge = 0.0
        while processes.is_running(faulty):
            if time.monotonic() > deadline:
                raise DevstackError(f"the {service} relay published nothing within {self.relay_deadline:g} s "
                                    f"in the faulty worker:\n{processes.log_tail(faulty)}")
            if time.monotonic() >= next_nudge:
                self.nudge(service)
                next_nudge = time.monotonic() + 2.0
            time.sleep(0.1)
        tail = processes.log_tail(faulty, 200)
        processes.stop(faulty)  # it ended as planned: not an unexpected exit
        if RELAY_FAULT_LOG not in tail:
            raise DevstackError(f"the {service} faulty worker ended, but not by the relay fault:\n{tail[-3000:]}")
        processes.restart(name)  # the plain worker again
        self._worker_up(service)

    def _worker_up(self, service: str, timeout: float = 120.0) -> None:
        """Wait until ``service``'s restarted worker serves its health endpoint, which it starts
        once it has checked its topics on Kafka: a worker still starting when the next fault
        takes Kafka away would exit (a supervisor would start it again; the chaos run does not)."""
        wait_http_ok(f"{self.platform.worker_url(service)}/healthz", timeout=timeout,
                     check=self.platform.processes.check)
