"""Operations: the metrics/health endpoint, process figures, watchdog and systemd notification,
clock synchronisation, logging, memory, the event loop choice and configuration reloads."""
