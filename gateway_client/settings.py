"""The pipeline client's settings: where the bus and the object storage are.

They are read as the gateway reads its own: environment variables first (``GATEWAY_`` prefix,
``__`` between nested names, e.g. ``GATEWAY_BROKER__URL``), then the TOML file, then the
defaults, which are the gateway's, so a pipeline started next to ``dicom-gateway serve`` without
a configuration finds its local event log and objects. A pipeline can be pointed at the
gateway's own ``gateway.toml``: only the ``[broker]`` and ``[storage]`` sections are read (the
same section models as the gateway's, so a value means the same to both), every other section is
ignored, and a field that is not one of those sections' fields is an error, as it is to the
gateway.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from gateway.settings import BrokerSettings, GatewaySettings, StorageSettings, TomlSettings
from gateway.settings_loading import load_from

__all__ = ["BrokerSettings", "ClientSettings", "StorageSettings"]

#: The variable naming the configuration file when none is given, as for ``dicom-gateway``.
CONFIG_VARIABLE = "GATEWAY_CONFIG"


class ClientSettings(TomlSettings):
    """What a pipeline needs of the gateway's configuration: its bus and its object storage."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        # The gateway's other sections ([ingest], [export], ...) are not the client's business.
        extra="ignore",
        frozen=True,
    )

    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()

    @classmethod
    def from_config(cls, config_file: Path | None = None) -> ClientSettings:
        """The settings from ``config_file`` and the ``GATEWAY_*`` variables, as ``dicom-gateway``
        reads them: None means the file ``$GATEWAY_CONFIG`` names, else the defaults.

        Raises :class:`~gateway_client.errors.ConfigError` naming every invalid field.
        """
        if config_file is None and os.environ.get(CONFIG_VARIABLE):
            config_file = Path(os.environ[CONFIG_VARIABLE])
        return load_from(cls, config_file)

    @classmethod
    def from_gateway(cls, settings: GatewaySettings) -> ClientSettings:
        """The sections of a gateway's settings the client uses (already validated, so not
        validated again, and no environment variable is read)."""
        return cls.model_construct(broker=settings.broker, storage=settings.storage)
