"""Event contracts, version 1: code generated from proto/crm/events/v1.

The ``*_pb2`` modules are written by ``python -m crm_codegen`` (``make proto``);
do not edit them. ``crm`` and ``crm.events`` are namespace packages.
"""
