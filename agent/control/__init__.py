"""Downlink commands: parse, authenticate, validate, rate-limit, execute, audit, answer."""
