"""The stable-study event: every instance of a study the gateway holds, once the study is quiet.

Senders often spread one study over several associations (a series each, or a resend). For a
called AE title with a quiet time (``study_stable_seconds``), the gateway publishes one
``dicomgateway.study.stable.v1`` once no released association has added an instance to the
study for that long, listing what it holds of the study across associations (the latest copy
of an instance sent twice). More instances later give a new event: the next ``revision``, a new
id, the full list again. Instances of aborted associations never count.
"""

from typing import Final, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contracts.events import AETitle, AssociationId, InstanceManifest, Pipeline, StoredInstance, Uid

#: CloudEvents ``type`` of the event announcing a stable study.
STUDY_STABLE_TYPE: Final = "dicomgateway.study.stable.v1"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StudyAssociation(_Model):
    """One association that stored instances of the study."""

    association_id: AssociationId = Field(description="Id the gateway gave the association.")
    calling_ae_title: AETitle = Field(description="AE title of the sender.")
    remote_host: str = Field(min_length=1, description="Address the sender connected from.")
    released_at: AwareDatetime = Field(
        description="When the sender released the association (RFC 3339 with a UTC offset)."
    )
    instance_count: int = Field(
        ge=1, description="Instances of the study listed from this association."
    )


class StudyStable(_Model):
    """A study received no new instance for the called AE title's quiet time."""

    study_instance_uid: Uid = Field(description="Study Instance UID (0020,000D).")
    revision: int = Field(
        ge=1,
        description=(
            "1 for the study's first stable event, one more for each later one (more instances "
            "arrived after the previous event). Each revision has its own event id."
        ),
    )
    called_ae_title: AETitle = Field(description="AE title the senders called (the gateway's).")
    pipeline: Pipeline = Field(
        description="Pipeline configured for the called AE title; the last word of the routing key."
    )
    stable_after_seconds: float = Field(
        gt=0, description="The quiet time that passed without a new instance."
    )
    last_stored_at: AwareDatetime = Field(
        description=(
            "When the last association adding instances to the study had them all stored "
            "(the quiet time counts from here)."
        )
    )
    instance_count: int = Field(
        ge=1, description="Number of instances listed (inline or in the manifest)."
    )
    total_bytes: int = Field(ge=0, description="Sum of the sizes of the listed objects.")
    bucket: str = Field(min_length=1, description="Bucket holding the stored objects.")
    association_count: int = Field(
        ge=1, description="Number of associations the listed instances were stored by."
    )
    associations: tuple[StudyAssociation, ...] = Field(
        description=(
            "The associations the listed instances were stored by, oldest first. Empty only "
            "in an event with a manifest when listing them would make it larger than the "
            "gateway's max_event_bytes; each instance's object key still begins with its "
            "association's id."
        ),
    )
    instances: tuple[StoredInstance, ...] = Field(
        description=(
            "Every instance of the study held for this AE title, in the order stored. Empty in "
            "a published event that has a manifest (the pipeline client fills it in)."
        )
    )
    manifest: InstanceManifest | None = Field(
        default=None,
        description=(
            "Set when the list would make the event larger than the gateway's max_event_bytes: "
            "the list is in this object (<event id>/instances.jsonl) instead of in instances."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.associations or self.manifest is None:
            if len(self.associations) != self.association_count:
                raise ValueError(
                    f"association_count is {self.association_count} but "
                    f"{len(self.associations)} associations are listed"
                )
            listed_associations = sum(a.instance_count for a in self.associations)
            if listed_associations != self.instance_count:
                raise ValueError(
                    f"instance_count is {self.instance_count} but the associations account "
                    f"for {listed_associations}"
                )
        if self.manifest is not None and not self.instances:
            return self  # the list is in the manifest; its reader checks the counts
        if self.instance_count != len(self.instances):
            raise ValueError(
                f"instance_count is {self.instance_count} but {len(self.instances)} instances "
                "are listed"
            )
        if self.total_bytes != sum(instance.size for instance in self.instances):
            raise ValueError("total_bytes is not the sum of the listed sizes")
        strays = {i.study_instance_uid for i in self.instances} - {self.study_instance_uid}
        if strays:
            named = ", ".join(sorted(str(uid) for uid in strays))
            raise ValueError(f"instances of other studies listed: {named}")
        return self
