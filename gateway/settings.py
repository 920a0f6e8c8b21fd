"""The gateway's configuration: one pydantic-settings model, built once at start-up.

Sources, highest priority first: environment variables (``GATEWAY_`` prefix, ``__`` between
nested names, e.g. ``GATEWAY_BROKER__URL``), the TOML file given by ``--config`` or
``GATEWAY_CONFIG``, then the defaults below. Every field is documented in the README.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from contracts.keys import is_valid_uid
from contracts.routing import is_valid_pipeline
from gateway.settings_loading import load_from

#: Our own Implementation Class UID, under the UUID-derived root 2.25 (PS3.5 B.2).
DEFAULT_IMPLEMENTATION_CLASS_UID = "2.25.161472372394163815240196838036926354915"
DEFAULT_IMPLEMENTATION_VERSION_NAME = "DICOMGW_010"

#: How the gateway runs pynetdicom: ``"prompt"`` with the extensions of :mod:`gateway.netdicom`,
#: ``"plain"`` on pynetdicom's own upper layer (see that package's docstring).
NetdicomMode = Literal["prompt", "plain"]

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no '\'


def _check_ae_title(value: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_TITLE.match(value):
        raise ValueError(
            f"{value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)"
        )
    return stripped


AETitle = Annotated[str, Field(min_length=1, max_length=16)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TomlSettings(BaseSettings):
    """Settings read from the environment, then from the TOML file :func:`load_from` names."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
        return sources


class AESettings(_Section):
    """One called AE title of the SCP and the pipeline its associations are announced to."""

    ae_title: AETitle
    pipeline: str = "default"
    allowed_sources: tuple[str, ...] = ()
    #: Quiet time after which a study is announced as stable (``study.stable.<pipeline>``),
    #: listing every instance of it held for this AE title across associations; 0: off.
    study_stable_seconds: float = Field(default=0, ge=0, le=7 * 86400)

    _check_ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("pipeline")
    @classmethod
    def _check_pipeline(cls, value: str) -> str:
        if not is_valid_pipeline(value):
            raise ValueError(
                f"{value!r} is not a valid pipeline name (letters, digits, '-' and '_', "
                "at most 64 characters): it becomes a routing-key segment"
            )
        return value


class SourceSettings(_Section):
    """A known sender: its calling AE title and, optionally, the host it must connect from."""

    name: str = Field(min_length=1)
    ae_title: AETitle
    host: str | None = None

    _check_ae = field_validator("ae_title")(_check_ae_title)


class TlsServerSettings(_Section):
    """DICOM TLS on the listener (PS3.15 B.1): our certificate, and what peers must show."""

    certificate: Path
    private_key: Path
    #: CA certificates (PEM) that peers' certificates are checked against.
    client_ca: Path | None = None
    #: Refuse peers without a certificate signed by ``client_ca``.
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _client_ca_for_required_certificates(self) -> TlsServerSettings:
        if self.require_client_certificate and self.client_ca is None:
            raise ValueError("require_client_certificate needs client_ca")
        return self


class TlsClientSettings(_Section):
    """DICOM TLS to a destination: what its certificate must be signed by, and ours if asked."""

    #: CA certificates (PEM) the destination's certificate must be signed by; empty: the
    #: system's trusted CAs.
    ca: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    #: The name the destination's certificate must carry; empty: the destination's host.
    server_name: str | None = None

    @model_validator(mode="after")
    def _certificate_with_its_key(self) -> TlsClientSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give certificate and private_key together, or neither")
        return self


class IngestSettings(_Section):
    host: str = "0.0.0.0"
    #: 0: a free port chosen by the system (the start-up log and ``--port-file`` give it).
    port: int = Field(default=11112, ge=0, le=65535)
    max_associations: int = Field(default=25, ge=1, le=1000)
    #: Optional: at most this many of them from one calling AE title, or from one remote
    #: address, so that one client cannot hold every place (None: no such limit).
    max_associations_per_calling_ae: int | None = Field(default=None, ge=1, le=1000)
    max_associations_per_address: int | None = Field(default=None, ge=1, le=1000)
    #: Processes that receive associations. One keeps everything in this process; more let
    #: concurrent associations use more cores (the association limit stays global).
    workers: int = Field(default=1, ge=1, le=32)
    reject_unknown_sources: bool = False
    storage_watermark_percent: float = Field(default=75, gt=0, le=100)
    reserved_storage_gb: float = Field(default=5, ge=0)
    #: Receive limits (ingest/receive_limits.py): an instance that would cross one is refused
    #: with 0xA700 while it arrives, and the association goes on; None: no such limit. Bytes
    #: as a number or with a unit ("8 GiB"). The watermark and reserve above apply while
    #: receiving too.
    max_instance_bytes: ByteSize | None = Field(default=ByteSize(8 * 1024**3), ge=1)
    max_association_bytes: ByteSize | None = Field(default=ByteSize(1024**4), ge=1)
    max_association_instances: int | None = Field(default=1_000_000, ge=1)
    #: A peer that, in the middle of an instance, delivers less than this on average over the
    #: window is aborted as a silent one is (0: no minimum).
    min_receive_bytes_per_second: ByteSize = ByteSize(4096)
    receive_rate_window_seconds: float = Field(default=60, gt=0)
    #: A data set not well-formed (docs/conformance.md): "store" keeps it as received and flags
    #: it in the event; "refuse" answers 0xC000 (a device then retries it for ever, or drops it).
    malformed_instances: Literal["store", "refuse"] = "store"
    spool_dir: Path = Path("gateway-data/spool")
    aborted_cleanup_seconds: float = Field(default=0, ge=0)
    implementation_class_uid: str = DEFAULT_IMPLEMENTATION_CLASS_UID
    implementation_version_name: str = Field(
        default=DEFAULT_IMPLEMENTATION_VERSION_NAME, min_length=1, max_length=16
    )
    max_pdu_length: int = Field(default=262_144, ge=0)
    #: Longest A-ASSOCIATE-RQ taken, in bytes: a longer one is rejected before it is read
    #: (gateway/netdicom/request_limits.py; prompt mode). 128 contexts each proposing all 45
    #: transfer syntaxes pynetdicom knows come to 148 kB; most requests are a few kB.
    max_associate_request_bytes: int = Field(default=262_144, ge=4096, le=67_108_864)
    network_timeout_seconds: float = Field(default=60, gt=0)
    shutdown_grace_seconds: float = Field(default=30, ge=0)
    instance_name: str = Field(default="dicom-gateway", min_length=1, max_length=128)
    #: Largest association event published: a longer instance list goes into a manifest
    #: object beside the instances and the event names it (claim check, contracts.manifest).
    max_event_bytes: int = Field(default=1_048_576, ge=16_384, le=67_108_864)
    #: How long the journal keeps a published association event (``associations reannounce``)
    #: and a study after its last stable event (for its next revision).
    history_days: float = Field(default=7, gt=0, le=36_500)
    #: DICOM TLS on the listener; none: plain TCP.
    tls: TlsServerSettings | None = None
    ae: tuple[AESettings, ...] = (AESettings(ae_title="GATEWAY"),)

    @field_validator("implementation_class_uid")
    @classmethod
    def _check_uid(cls, value: str) -> str:
        if not is_valid_uid(value):
            raise ValueError(f"{value!r} is not a valid UID")
        return value

    @model_validator(mode="after")
    def _source_limits_within_all(self) -> IngestSettings:
        for name in ("max_associations_per_calling_ae", "max_associations_per_address"):
            value = getattr(self, name)
            if value is not None and value > self.max_associations:
                raise ValueError(
                    f"{name} ({value}) exceeds max_associations ({self.max_associations})"
                )
        return self

    @model_validator(mode="after")
    def _unique_ae_titles(self) -> IngestSettings:
        titles = [ae.ae_title for ae in self.ae]
        if not titles:
            raise ValueError("at least one [[ingest.ae]] is required")
        duplicates = sorted({t for t in titles if titles.count(t) > 1})
        if duplicates:
            raise ValueError(f"AE titles configured twice: {', '.join(duplicates)}")
        return self


class StorageSettings(_Section):
    #: "file" (the zero-configuration default) keeps objects under ``path``; production uses S3.
    backend: Literal["s3", "file"] = "file"
    endpoint: str = "127.0.0.1:9000"
    bucket: str = "dicom-gateway"
    access_key: str = ""
    secret_key: str = ""
    secure: bool = False
    region: str | None = None
    path: Path = Path("gateway-data/objects")
    #: Objects are deleted this many whole days after they were stored (None: kept for ever).
    #: On S3 a bucket lifecycle rule the gateway sets; on files a sweep (ingest/retention.py).
    retention_days: int | None = Field(default=None, ge=1, le=36_500)


class BrokerSettings(_Section):
    #: Empty (the zero-configuration default): events go to the local event log instead of
    #: RabbitMQ, and export consumes its requests from there.
    url: str = ""
    exchange: str = "dicom-gateway"
    event_log: Path = Path("gateway-data/events.sqlite3")
    event_log_retention_days: float = Field(default=30, gt=0)

    @property
    def embedded(self) -> bool:
        return not self.url


#: A port of the HTTP endpoints: a number, 0 for none, or ``"auto"`` for a free port chosen by
#: the system.
HttpPort = Annotated[int, Field(ge=0, le=65535)] | Literal["auto"]


class HttpSettings(_Section):
    """The health and metrics endpoints; a port of 0 turns that service's endpoint off,
    ``"auto"`` lets the system choose a free one (the start-up log and ``--port-file`` give it).

    ``serve`` (both services in one process) answers for both on ``ingest_port``.
    """

    host: str = "0.0.0.0"
    ingest_port: HttpPort = 8080
    export_port: HttpPort = 8081


class DestinationSettings(_Section):
    """A remote Storage SCP that export sends to."""

    name: str = Field(min_length=1, max_length=64)
    ae_title: AETitle
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    #: DICOM TLS to this destination; none: plain TCP.
    tls: TlsClientSettings | None = None

    _check_ae = field_validator("ae_title")(_check_ae_title)


EXAMPLE_DESTINATION = DestinationSettings(
    name="example", ae_title="STORESCP", host="127.0.0.1", port=11113
)


class ExportSettings(_Section):
    ae_title: AETitle = "GATEWAY-SCU"
    max_associations: int = Field(default=2, ge=1, le=64)
    #: At most this many of ``max_associations`` to one destination, so that a slow or
    #: failing destination cannot hold every slot while requests for others wait. None: all
    #: of them with one destination configured, else one fewer than all (at least one).
    max_associations_per_destination: int | None = Field(default=None, ge=1, le=64)
    prefetch: int = Field(default=4, ge=1, le=1000)
    retries: int = Field(default=3, ge=0, le=100)
    retry_backoff_seconds: tuple[float, ...] = (5.0, 30.0, 120.0)
    queue: str = Field(default="dicom-gateway.export", min_length=1, max_length=200)
    state_dir: Path = Path("gateway-data/export")
    max_pdu_length: int = Field(default=262_144, ge=0)
    network_timeout_seconds: float = Field(default=60, gt=0)
    dimse_timeout_seconds: float = Field(default=60, gt=0)
    shutdown_grace_seconds: float = Field(default=30, ge=0)
    #: One example, so that a fresh install has something to send to: a storescp on this
    #: machine (``storescp +B -aet STORESCP 11113``). Any configured list replaces it.
    destinations: tuple[DestinationSettings, ...] = (EXAMPLE_DESTINATION,)

    _check_ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("retry_backoff_seconds")
    @classmethod
    def _check_backoff(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("give at least one delay, none negative")
        return value

    @model_validator(mode="after")
    def _unique_destinations(self) -> ExportSettings:
        names = [d.name for d in self.destinations]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"destination names used twice: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _per_destination_within_all(self) -> ExportSettings:
        per = self.max_associations_per_destination
        if per is not None and per > self.max_associations:
            raise ValueError(
                f"max_associations_per_destination ({per}) exceeds max_associations "
                f"({self.max_associations})"
            )
        return self

    @property
    def associations_per_destination(self) -> int:
        """``max_associations_per_destination``, or its default (see there)."""
        if self.max_associations_per_destination is not None:
            return self.max_associations_per_destination
        if len(self.destinations) == 1:
            return self.max_associations
        return max(1, self.max_associations - 1)

    def destination(self, name: str) -> DestinationSettings | None:
        return next((d for d in self.destinations if d.name == name), None)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based); the last delay repeats."""
        return self.retry_backoff_seconds[min(attempt, len(self.retry_backoff_seconds)) - 1]


class GatewaySettings(TomlSettings):
    """Everything the gateway can be told. Built by :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    log_format: Literal["text", "json"] = "text"
    #: ``--log-level`` on the command line wins over this.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``"plain"`` runs ingest and export on plain pynetdicom, without the speed extensions.
    netdicom: NetdicomMode = "prompt"
    ingest: IngestSettings = IngestSettings()
    sources: tuple[SourceSettings, ...] = ()
    storage: StorageSettings = StorageSettings()
    broker: BrokerSettings = BrokerSettings()
    export: ExportSettings = ExportSettings()
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _known_sources(self) -> GatewaySettings:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"[[sources]] names used twice: {', '.join(duplicates)}")
        for ae in self.ingest.ae:
            unknown = sorted(set(ae.allowed_sources) - set(names))
            if unknown:
                raise ValueError(
                    f"ingest.ae {ae.ae_title!r}: allowed_sources names unknown sources: "
                    f"{', '.join(unknown)}"
                )
        return self


def load_settings(config_file: Path | None) -> GatewaySettings:
    """Build the settings from ``config_file`` (if any) and the environment.

    Raises :class:`ConfigError` naming every invalid field.
    """
    return load_from(GatewaySettings, config_file)
