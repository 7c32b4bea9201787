"""Non-Modbus serial drivers: profile-defined request/response protocols, Pelco-D, M-Bus.

Layers (each testable alone): ``framing`` (checksums, byte-stream deframers) -> the byte link
(``drivers/link.py``: serial port or serial server over TCP, shared with Modbus RTU) ->
protocol codecs (``generic``, ``pelco_d``, ``mbus``, sans-I/O) and their ``handlers`` ->
``session`` under the bus-owner skeleton every bus kind shares (``drivers/owner.py``;
``bus.SerialBus`` is the two together, the one task that owns the line).

This package's ``__init__`` stays import-free: ``drivers.core.profile`` imports
``drivers.serial.spec`` while profiles load, so nothing here may import ``drivers.base``.
"""
