"""Deterministic DICOM Part 10 files, made in code so that no binary test data is checked in.

Every factory writes its files into a directory the test owns (created if missing), named after
their SOP Instance UIDs, and returns :class:`Instance` records. The same arguments (including
``seed``) always give the same bytes and UIDs, so a failure can be reproduced and a file can be
regenerated instead of stored; different arguments give different SOP instances. Instances made
with the same ``seed`` belong to the same patient and study.

The files are encoded here rather than with ``Dataset.save_as`` because some of them are what
pydicom would refuse or normalise: a private transfer syntax, group length elements, standard
attributes sent with VR UN, fake codestreams in encapsulated pixel data. Those are the encodings a
gateway that decodes and re-encodes would lose, which is what the byte-exactness tests look for.
The benchmarks' data sets are made by the same factories (``bench.datasets`` caches them).

- :mod:`~tests.support.factories.images`: the file factories (CT series, private SOP classes,
  compressed, awkward and large instances);
- :mod:`~tests.support.factories.raw`: data sets in memory, element by element;
- :mod:`~tests.support.factories.part10`: UIDs (:func:`derived_uid`, the one UID derivation of
  tests and benchmarks), reading a file's meta, UIDs and data set, and the encoders;
- :mod:`~tests.support.factories.blocks`: the modules every data set is built from.
"""

from tests.support.factories.images import (
    awkward_instance,
    compressed_instance,
    ct_series,
    jpip_referenced_instance,
    large_instance,
    odd_length_instance,
    private_sop_instance,
)
from tests.support.factories.part10 import (
    CT_IMAGE_STORAGE,
    ENCAPSULATED_TRANSFER_SYNTAXES,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    JPIP_REFERENCED_DEFLATE,
    NATIVE_TRANSFER_SYNTAXES,
    PIXEL_DATA,
    PRIVATE_SOP_CLASS,
    PRIVATE_TRANSFER_SYNTAX,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    Instance,
    InstanceUIDs,
    data_set_bytes,
    dataset_digest,
    derived_uid,
    file_meta_length,
    instance_uids,
)
from tests.support.factories.raw import EncodedDataSet, small_data_set

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENCAPSULATED_TRANSFER_SYNTAXES",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "JPIP_REFERENCED_DEFLATE",
    "NATIVE_TRANSFER_SYNTAXES",
    "PIXEL_DATA",
    "PRIVATE_SOP_CLASS",
    "PRIVATE_TRANSFER_SYNTAX",
    "SECONDARY_CAPTURE_IMAGE_STORAGE",
    "EncodedDataSet",
    "Instance",
    "InstanceUIDs",
    "awkward_instance",
    "compressed_instance",
    "ct_series",
    "data_set_bytes",
    "dataset_digest",
    "derived_uid",
    "file_meta_length",
    "instance_uids",
    "jpip_referenced_instance",
    "large_instance",
    "odd_length_instance",
    "private_sop_instance",
    "small_data_set",
]
