"""The CRM platform's event contracts in Python.

- ``crm.events.v1``: the code generated from ``proto/crm/events/v1`` (committed).
- ``crm_events.envelope``: build, encode and decode envelopes; Kafka headers.
- ``crm_events.topics``: the topic registry (owners, keys, schemas, settings, DLQs)
  and an example message per topic.

The code is regenerated, checked fresh and guarded for compatibility by the build
tool ``crm_codegen`` (``tools/crm-codegen``, ``make proto``).

Import the submodules directly; this package imports nothing so that it stays
importable while the generated code is missing or broken.
"""
