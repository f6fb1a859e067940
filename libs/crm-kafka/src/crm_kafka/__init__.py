"""crm_kafka: events in and out of a service, exactly once in effect.

- ``outbox.record_event``: add an event to the outbox in the state change's transaction.
- ``relay.OutboxRelay``: publish committed outbox rows (idempotent producer), mark them
  sent only after Kafka confirmed delivery.
- ``consumer.IdempotentConsumer``: apply each event once (inbox row committed with the
  effect, offsets committed after), retry with backoff, then dead-letter.
- ``worker.run_worker``: the worker process (relay + consumers + health/metrics).
"""
