"""Sinks: where accepted readings go (JSON lines, MQTT via the outbox, ...)."""
