"""FIWARE IoT Agent (iotagent-json) integration: the attribute mapping of each device, the
service group and device provisioning built from it, and the shape of command answers.

One mapping (``mapping.py``) drives both the ``iotagent`` encoder and ``cityedge fiware
provision``, so the measures a gateway sends are exactly the attributes the IoT Agent was told
about, with the Smart Data Models names and JSON types (docs/PAYLOADS.md, "FIWARE").
"""
