"""pydantic-settings' environment source over given variables, for agent/config/environ.py.

Imported only when a ``CITYEDGE_*`` config variable is set (the service normally has none):
pydantic-settings adds about 1 MB of RSS and 20 ms of start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from agent.config.environ import NESTED, PREFIX
from agent.config.gateway import GatewayConfig


class _Settings(GatewayConfig, BaseSettings):
    """The gateway model as pydantic-settings sees it: the source reads its fields and these
    settings; it never validates (the loader does, naming every value's origin)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_nested_delimiter=NESTED,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        defer_build=True,  # no second schema of the whole config: nothing is validated here
    )


class VariablesSource(EnvSettingsSource):
    """``EnvSettingsSource`` reading the variables given instead of ``os.environ``
    (``_load_env_vars`` is the hook the library's own dotenv and secrets sources override),
    and keeping the JSON error of a value it could not decode: it raises a ``SettingsError``
    without the variable, or, for a field that takes other values too (``gateway.location``:
    a pair or nothing), passes the text on."""

    json_error: ValueError | None = None

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(_Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._variables.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError as exc:
            self.json_error = exc
            raise
