"""The data of the export events: a request to send stored objects, and its completion.

A pipeline publishes :class:`ExportRequested` (type :data:`EXPORT_REQUESTED_TYPE`, routing key
``export.requested``); the export service C-STOREs the named objects, unchanged, to every named
destination and publishes one :class:`ExportCompleted` (type :data:`EXPORT_COMPLETED_TYPE`,
routing key ``export.completed`` or the request's ``reply_routing_key``). ``export_id`` is the
idempotency key: a request whose export was already completed is not sent again, its completion
is re-published. The status rules are :func:`destination_status` and :func:`overall_status`.
The JSON Schemas in ``contracts/schemas`` are generated from these models.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from contracts.events import AssociationId
from contracts.keys import ASSOCIATION_ID_PATTERN, OBJECT_KEY_SUFFIX, UID_PATTERN, parse_object_key
from contracts.routing import (
    EXPORT_REQUESTED_ROUTING_KEY,
    ROUTING_KEY_MAX_BYTES,
    is_valid_routing_key,
)

#: CloudEvents ``type`` of a request to export stored objects.
EXPORT_REQUESTED_TYPE: Final = "dicomgateway.export.requested.v1"
#: CloudEvents ``type`` of the event reporting how an export went.
EXPORT_COMPLETED_TYPE: Final = "dicomgateway.export.completed.v1"

#: An export id's grammar: 1 to 128 ASCII letters, digits, ``.``, ``_``, ``:`` or ``-``.
EXPORT_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
#: Longest destination name (the names come from the export configuration).
DESTINATION_NAME_MAX_LENGTH: Final = 64
#: Largest DIMSE status word.
DICOM_STATUS_MAX: Final = 0xFFFF

# The object key grammar for the JSON Schema, from the grammars of its parts (the code validates
# keys with parse_object_key, which also checks the UIDs' length).
_UID_BODY: Final = UID_PATTERN.removeprefix("^").removesuffix("$")
_OBJECT_KEY_PATTERN: Final = (
    f"{ASSOCIATION_ID_PATTERN.removesuffix('$')}/{_UID_BODY}/{_UID_BODY}/{_UID_BODY}"
    f"{re.escape(OBJECT_KEY_SUFFIX)}$"
)
# Used with fullmatch, because "$" alone would also accept a trailing newline.
_EXPORT_ID: Final = re.compile(EXPORT_ID_PATTERN)


def is_valid_export_id(value: str) -> bool:
    """Whether ``value`` can be an export id (see :data:`EXPORT_ID_PATTERN`)."""
    return _EXPORT_ID.fullmatch(value) is not None


def _require(is_valid: Callable[[str], bool], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not is_valid(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return AfterValidator(check)


def _check_object_key(key: str) -> str:
    parse_object_key(key)  # InvalidObjectKey is a ValueError: pydantic reports it on the field
    return key


def _nonempty_unique(what: str) -> AfterValidator:
    # Checked after the items, not with min_length: pydantic would also report an empty tuple
    # when an item is invalid.
    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        _check_nonempty_unique(values, what)
        return values

    return AfterValidator(check)


def _check_nonempty_unique(values: Iterable[str], what: str) -> None:
    counts = Counter(values)
    if not counts:
        raise ValueError(f"list at least one {what}")
    repeated = [value for value, count in counts.items() if count > 1]
    if repeated:
        raise ValueError(f"{what} listed more than once: {', '.join(map(repr, repeated))}")


ExportId = Annotated[
    str,
    _require(is_valid_export_id, "export id"),
    Field(json_schema_extra={"pattern": EXPORT_ID_PATTERN, "minLength": 1, "maxLength": 128}),
]
DestinationName = Annotated[str, Field(min_length=1, max_length=DESTINATION_NAME_MAX_LENGTH)]
ObjectKey = Annotated[
    str,
    AfterValidator(_check_object_key),
    Field(json_schema_extra={"pattern": _OBJECT_KEY_PATTERN}),
]
RoutingKey = Annotated[
    str,
    _require(is_valid_routing_key, "routing key"),
    # JSON Schema counts characters; the limit is in UTF-8 bytes, as AMQP counts it.
    Field(
        json_schema_extra={
            "pattern": r"^[^*#]+$",
            "minLength": 1,
            "maxLength": ROUTING_KEY_MAX_BYTES,
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExportRequested(_Model):
    """A request to C-STORE stored objects, as stored, to configured destinations.

    Exactly one of ``association_id`` and ``object_keys`` names what to send.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["association_id"],
                    "properties": {"association_id": {"type": "string"}},
                },
                {"required": ["object_keys"], "properties": {"object_keys": {"type": "array"}}},
            ]
        }
    )

    export_id: ExportId = Field(
        description=(
            "Id the requester gives the export: the idempotency key, echoed in the completion. "
            "A request whose export_id was already completed is not sent again; its completion "
            "is re-published."
        )
    )
    destinations: Annotated[
        tuple[DestinationName, ...],
        _nonempty_unique("destination"),
        Field(json_schema_extra={"minItems": 1, "uniqueItems": True}),
    ] = Field(description="Names of configured destinations to send to, each named once.")
    association_id: AssociationId | None = Field(
        default=None,
        description=(
            "Send every object stored under this association's prefix. Exactly one of "
            "association_id and object_keys is given."
        ),
    )
    object_keys: (
        Annotated[
            tuple[ObjectKey, ...],
            _nonempty_unique("object key"),
            Field(json_schema_extra={"minItems": 1, "uniqueItems": True}),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Send these stored objects: keys of the form "
            "<association_id>/<study_instance_uid>/<series_instance_uid>/<sop_instance_uid>.dcm, "
            "each listed once. Exactly one of association_id and object_keys is given."
        ),
    )
    reply_routing_key: RoutingKey | None = Field(
        default=None,
        description=(
            "Routing key to publish the completion with instead of export.completed: 1 to 255 "
            "UTF-8 bytes, no '*' or '#', not export.requested."
        ),
    )
    correlation: dict[str, Any] | None = Field(
        default=None,
        description="Free-form JSON object, echoed unchanged in the completion.",
    )

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        if (self.association_id is None) == (self.object_keys is None):
            raise ValueError("give exactly one of association_id and object_keys")
        if self.reply_routing_key == EXPORT_REQUESTED_ROUTING_KEY:
            raise ValueError(
                f"reply_routing_key {EXPORT_REQUESTED_ROUTING_KEY!r} would send the completion "
                "back to the export requests"
            )
        return self


class InstanceOutcome(StrEnum):
    """What happened to one object at one destination."""

    SENT = "sent"
    """The destination answered the C-STORE with success or a warning."""
    FAILED = "failed"
    """Not stored at the destination: a failure status, a refused presentation context, an
    object that could not be read, or a destination that could not be reached."""
    SKIPPED = "skipped"
    """Deliberately not sent; not a failure."""


class ExportStatus(StrEnum):
    """How an export went at one destination, or over all of them."""

    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"


class InstanceResult(_Model):
    """The outcome of one object at one destination."""

    object_key: str = Field(
        min_length=1,
        description=(
            "Key of the object in the bucket (for an association with no objects, its prefix)."
        ),
    )
    sop_instance_uid: Annotated[str, Field(min_length=1)] | None = Field(
        description=(
            "SOP Instance UID read from the object's file meta information; null when the object "
            "could not be read."
        ),
    )
    status: InstanceOutcome = Field(description="sent, failed or skipped.")
    dicom_status: Annotated[int, Field(ge=0, le=DICOM_STATUS_MAX)] | None = Field(
        description="Status word of the destination's C-STORE response; null when there was none.",
    )
    error: str | None = Field(
        description=(
            "Short reason the object failed or was skipped (or what a warning status meant); "
            "null when there is nothing to explain."
        )
    )


class DestinationResult(_Model):
    """The outcome of an export at one destination."""

    name: DestinationName = Field(description="Name of the configured destination.")
    status: ExportStatus = Field(
        description="Follows from the instances' outcomes (see destination_status)."
    )
    instances_sent: int = Field(ge=0, description="Number of instances with status sent.")
    instances_failed: int = Field(ge=0, description="Number of instances with status failed.")
    instances: tuple[InstanceResult, ...] = Field(
        description="Outcome of every requested object at this destination."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for field, outcome, count in (
            ("instances_sent", InstanceOutcome.SENT, self.instances_sent),
            ("instances_failed", InstanceOutcome.FAILED, self.instances_failed),
        ):
            listed = sum(instance.status is outcome for instance in self.instances)
            if count != listed:
                raise ValueError(f"{field} is {count} but {listed} instances are {outcome}")
        expected = destination_status(self.instances)
        if self.status is not expected:
            raise ValueError(f"status is {self.status} but the instances make it {expected}")
        return self


class ExportCompleted(_Model):
    """How an export went: one per export request, per destination and per object."""

    export_id: ExportId = Field(description="The request's export_id.")
    status: ExportStatus = Field(
        description="Follows from the destinations' statuses (see overall_status)."
    )
    correlation: dict[str, Any] | None = Field(description="The request's correlation, unchanged.")
    started_at: AwareDatetime = Field(
        description="When the export started (RFC 3339 with a UTC offset)."
    )
    finished_at: AwareDatetime = Field(
        description="When the export finished (RFC 3339 with a UTC offset)."
    )
    destinations: Annotated[
        tuple[DestinationResult, ...],
        Field(json_schema_extra={"minItems": 1}),
    ] = Field(description="Outcome at each requested destination, in the request's order.")

    @field_validator("destinations")
    @classmethod
    def _one_per_destination(
        cls, destinations: tuple[DestinationResult, ...]
    ) -> tuple[DestinationResult, ...]:
        _check_nonempty_unique((destination.name for destination in destinations), "destination")
        return destinations

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        expected = overall_status(self.destinations)
        if self.status is not expected:
            raise ValueError(f"status is {self.status} but the destinations make it {expected}")
        return self


def destination_status(instances: Sequence[InstanceResult]) -> ExportStatus:
    """The status of a destination, from the outcomes of its instances.

    - ``succeeded``: there is at least one instance and none failed (each was sent or skipped);
    - ``failed``: no instance was sent and at least one failed, or there are no instances at all
      (nothing could be sent);
    - ``partially_failed``: some instances were sent and some failed.
    """
    outcomes = {instance.status for instance in instances}
    if not outcomes:
        return ExportStatus.FAILED
    if InstanceOutcome.FAILED not in outcomes:
        return ExportStatus.SUCCEEDED
    if InstanceOutcome.SENT not in outcomes:
        return ExportStatus.FAILED
    return ExportStatus.PARTIALLY_FAILED


def overall_status(results: Sequence[DestinationResult]) -> ExportStatus:
    """The status of an export, from the statuses of its destinations.

    - ``succeeded``: there is at least one destination and every destination succeeded;
    - ``failed``: every destination failed, or there are no destinations (nothing was sent);
    - ``partially_failed``: anything else, that is some destination succeeded or partially
      failed and some other did not succeed.
    """
    statuses = {result.status for result in results}
    if statuses == {ExportStatus.SUCCEEDED}:
        return ExportStatus.SUCCEEDED
    if not statuses or statuses == {ExportStatus.FAILED}:
        return ExportStatus.FAILED
    return ExportStatus.PARTIALLY_FAILED
