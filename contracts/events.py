"""The data of the events the gateway publishes.

These models are the contract pipelines rely on: field names, types and constraints. The JSON
Schemas in ``contracts/schemas`` are generated from them (see :mod:`contracts.schema_files`).
"""

from collections.abc import Callable
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from contracts.keys import (
    ASSOCIATION_ID_PATTERN,
    UID_MAX_LENGTH,
    UID_PATTERN,
    is_valid_association_id,
    is_valid_uid,
    manifest_key,
    parse_object_key,
)
from contracts.routing import PIPELINE_PATTERN, is_valid_pipeline

#: CloudEvents ``type`` of the event announcing a released association.
ASSOCIATION_RELEASED_TYPE: Final = "dicomgateway.association.released.v1"


def _require(is_valid: Callable[[str], bool], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not is_valid(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return AfterValidator(check)


# Validated by the same predicates the rest of the code uses; the pattern is repeated in the JSON
# Schema only so that consumers in other languages can see the grammar.
Uid = Annotated[
    str,
    _require(is_valid_uid, "DICOM UID"),
    Field(json_schema_extra={"pattern": UID_PATTERN, "maxLength": UID_MAX_LENGTH}),
]
AssociationId = Annotated[
    str,
    _require(is_valid_association_id, "association id"),
    Field(json_schema_extra={"pattern": ASSOCIATION_ID_PATTERN}),
]
Pipeline = Annotated[
    str,
    _require(is_valid_pipeline, "pipeline name"),
    Field(json_schema_extra={"pattern": PIPELINE_PATTERN}),
]
AETitle = Annotated[str, Field(min_length=1, max_length=16)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: Longest ``reason`` of an instance stored although not well-formed.
MAX_REASON_LENGTH: Final = 512
#: Fields of :class:`StoredInstance` left out of its JSON when they have these values.
_OMITTED_WHEN: Final[dict[str, object]] = {
    "study_instance_uid": None,
    "series_instance_uid": None,
    "well_formed": True,
    "reason": None,
}


class StoredInstance(_Model):
    """One DICOM instance received and stored during the association."""

    sop_instance_uid: Uid = Field(description="SOP Instance UID (0008,0018) of the instance.")
    sop_class_uid: Uid = Field(description="SOP Class UID (0008,0016) of the instance.")
    transfer_syntax_uid: Uid = Field(
        description="Transfer Syntax UID (0002,0010) the instance was received and stored in."
    )
    study_instance_uid: Uid | None = Field(
        default=None,
        description=(
            "Study Instance UID (0020,000D) of the instance. Absent only when the data set has "
            "no valid one (then well_formed is false)."
        ),
    )
    series_instance_uid: Uid | None = Field(
        default=None,
        description=(
            "Series Instance UID (0020,000E) of the instance. Absent only when the data set has "
            "no valid one (then well_formed is false)."
        ),
    )
    object_key: str = Field(
        description=(
            "Key of the stored object in the bucket: "
            "<association_id>/<study_instance_uid>/<series_instance_uid>/<sop_instance_uid>.dcm, "
            "with 'unknown' in place of an absent study or series UID."
        )
    )
    size: int = Field(ge=0, description="Size of the stored object in bytes.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 digest of the stored object, as 64 lowercase hexadecimal digits.",
    )
    well_formed: bool = Field(
        default=True,
        description=(
            "False when the instance was stored as received although its data set's encoding "
            "cannot be followed to its end, or it has no valid Study or Series Instance UID "
            "(the gateway's ingest.malformed_instances = 'store'); reason says what is wrong. "
            "Present only when false."
        ),
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REASON_LENGTH,
        description=(
            "Why the instance is not well-formed (element tags and offsets, never values); "
            "present only when well_formed is false."
        ),
    )

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A well-formed instance is written as it was before these fields existed, so that a
        # consumer built on an earlier version of this model (extra="forbid") still reads it.
        data: dict[str, Any] = handler(self)
        for name, default in _OMITTED_WHEN.items():
            if data.get(name, default) == default:
                data.pop(name, None)
        return data

    @model_validator(mode="after")
    def _flag_matches_reason(self) -> Self:
        if self.well_formed != (self.reason is None):
            raise ValueError("reason is given exactly when well_formed is false")
        if self.well_formed and None in (self.study_instance_uid, self.series_instance_uid):
            raise ValueError("a well-formed instance has a study and a series instance UID")
        return self

    @model_validator(mode="after")
    def _key_matches_uids(self) -> Self:
        parts = parse_object_key(self.object_key)
        uids = (self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid)
        if (parts.study_instance_uid, parts.series_instance_uid, parts.sop_instance_uid) != uids:
            raise ValueError(
                f"object_key {self.object_key!r} does not name this instance's study, series "
                "and SOP instance UIDs"
            )
        return self


class InstanceManifest(_Model):
    """Where the instance list is when it is too long for the event (a claim check).

    The object holds one :class:`StoredInstance` per line as JSON (JSON Lines, UTF-8), in the
    order received; its schema is ``association.instance.v1.json``.
    """

    object_key: str = Field(
        description="Key of the manifest object in the bucket: <association_id>/instances.jsonl."
    )
    size: int = Field(ge=1, description="Size of the manifest object in bytes.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 digest of the manifest object, as 64 lowercase hexadecimal digits.",
    )


class AssociationReleased(_Model):
    """A sender released an association; everything it stored is in the bucket."""

    association_id: AssociationId = Field(
        description=(
            "Id the gateway gave the association: also the CloudEvent id and the first segment "
            "of every object key."
        )
    )
    called_ae_title: AETitle = Field(description="AE title the sender called (the gateway's).")
    calling_ae_title: AETitle = Field(description="AE title of the sender.")
    remote_host: str = Field(min_length=1, description="Address the sender connected from.")
    remote_port: int = Field(ge=1, le=65535, description="TCP port the sender connected from.")
    pipeline: Pipeline = Field(
        description=(
            "Pipeline configured for the called AE title; the last word of the routing key."
        )
    )
    started_at: AwareDatetime = Field(
        description="When the association was accepted (RFC 3339 with a UTC offset)."
    )
    released_at: AwareDatetime = Field(
        description="When the sender released the association (RFC 3339 with a UTC offset)."
    )
    instance_count: int = Field(
        ge=0,
        description=(
            "Number of instances stored; equals the length of the list (inline or manifest)."
        ),
    )
    total_bytes: int = Field(ge=0, description="Sum of the sizes of the stored objects.")
    bucket: str = Field(min_length=1, description="Bucket holding the stored objects.")
    instances: tuple[StoredInstance, ...] = Field(
        description=(
            "The instances stored during the association, in the order received. Empty in a "
            "published event that has a manifest: the list is then in the manifest object "
            "(the pipeline client reads it and fills this in)."
        )
    )
    manifest: InstanceManifest | None = Field(
        default=None,
        description=(
            "Set when the instance list would make the event larger than the gateway's "
            "max_event_bytes: the list is in this object instead of in instances."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.manifest is not None:
            expected = manifest_key(self.association_id)
            if self.manifest.object_key != expected:
                raise ValueError(
                    f"manifest object_key {self.manifest.object_key!r} is not {expected!r}"
                )
            if not self.instances:
                return self  # the list is in the manifest; its reader checks the counts
        if self.instance_count != len(self.instances):
            raise ValueError(
                f"instance_count is {self.instance_count} but {len(self.instances)} "
                "instances are listed"
            )
        listed_bytes = sum(instance.size for instance in self.instances)
        if self.total_bytes != listed_bytes:
            raise ValueError(
                f"total_bytes is {self.total_bytes} but the listed sizes add up to {listed_bytes}"
            )
        for instance in self.instances:
            if parse_object_key(instance.object_key).association_id != self.association_id:
                raise ValueError(
                    f"object_key {instance.object_key!r} is not under this association's prefix"
                )
        return self
