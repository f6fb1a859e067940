"""The CRM platform's event contracts in Python.

- ``crm.events.v1``: the code generated from ``proto/crm/events/v1`` (committed).
- ``crm_events.envelope``: build, encode and decode envelopes; Kafka headers.
- ``crm_events.topics``: the topic registry (owners, keys, schemas, settings, DLQs)
  and an example message per topic.
- ``crm_events.codegen``: regenerate the code, check it is fresh and compatible.

Import the submodules directly; this package imports nothing so that the code
generator still runs while the generated code is missing or broken.
"""
