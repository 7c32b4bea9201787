"""Configuration: gateway file + drop-ins + profiles, validated once into frozen objects."""

from agent.config.loader import LoadedConfig, load_config
from drivers.core.errors import ConfigError, ConfigIssue

__all__ = ["ConfigError", "ConfigIssue", "LoadedConfig", "load_config"]
