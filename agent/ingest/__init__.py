"""Ingest: the drivers' readings are filtered, numbered and handed to the sinks (``pipeline``,
``filtering``)."""
