"""Non-Modbus serial drivers: profile-defined request/response protocols, Pelco-D, M-Bus.

Layers (each testable alone): ``framing`` (checksums, byte-stream deframers) -> ``transport``
(serial port or serial server over TCP) -> protocol codecs (``generic``, ``pelco_d``, ``mbus``,
sans-I/O) -> ``bus.SerialBus`` (the one task that owns the line).

This package's ``__init__`` stays import-free: ``drivers.core.profile`` imports
``drivers.serial.spec`` while profiles load, so nothing here may import ``drivers.base``.
"""
