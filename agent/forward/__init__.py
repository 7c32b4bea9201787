"""Forward: what leaves the gateway. The outbox (``outbox`` and its ``outbox_*`` parts, on the
state directory of ``statedir``), the sinks, the encoders of every payload format, the MQTT
connection and the FIWARE provisioning."""
