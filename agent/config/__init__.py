"""Configuration: gateway file + drop-ins + profiles, validated once into frozen objects."""

from agent.config.errors import ConfigError, ConfigIssue
from agent.config.loader import LoadedConfig, load_config

__all__ = ["ConfigError", "ConfigIssue", "LoadedConfig", "load_config"]
