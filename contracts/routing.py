"""Where events are published on RabbitMQ.

The gateway publishes to one topic exchange; the routing key names the event and the pipeline the
called AE title is configured for, so each pipeline binds its own queue to its own key (or to
:data:`ASSOCIATION_RELEASED_BINDING` to see every pipeline's events).
"""

import re
from typing import Final

from contracts.errors import ContractError

#: Default name of the topic exchange the gateway publishes to.
EXCHANGE: Final = "dicom-gateway"
#: Binding key that matches the association-released events of every pipeline.
ASSOCIATION_RELEASED_BINDING: Final = "association.released.*"

#: A pipeline name's grammar. No dots: the name is exactly one routing-key word, so "*" in a
#: binding matches it.
PIPELINE_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"

# Used with fullmatch, because "$" alone would also accept a trailing newline.
_PIPELINE: Final = re.compile(PIPELINE_PATTERN)


def is_valid_pipeline(name: str) -> bool:
    """Whether ``name`` can name a pipeline: 1 to 64 ASCII letters, digits, ``-`` or ``_``."""
    return _PIPELINE.fullmatch(name) is not None


def association_released_routing_key(pipeline: str) -> str:
    """The routing key of the association-released events announced to ``pipeline``."""
    if not is_valid_pipeline(pipeline):
        raise ContractError(f"{pipeline!r} is not a valid pipeline name")
    return f"association.released.{pipeline}"
