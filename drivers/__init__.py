"""Field-bus drivers (Modbus, profile-defined serial, Pelco-D, M-Bus) and device profiles."""
