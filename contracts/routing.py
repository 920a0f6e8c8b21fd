"""Where events are published on RabbitMQ.

The gateway publishes to one topic exchange; the routing key names the event and the pipeline the
called AE title is configured for, so each pipeline binds its own queue to its own key (or to
:data:`ASSOCIATION_RELEASED_BINDING` to see every pipeline's events).

Export requests are published to the same exchange with :data:`EXPORT_REQUESTED_ROUTING_KEY`;
their completions come back with :data:`EXPORT_COMPLETED_ROUTING_KEY`, or with the request's
reply routing key (any key :func:`is_valid_routing_key` accepts) when it gives one.
"""

import re
from typing import Final

from contracts.errors import ContractError

#: Default name of the topic exchange the gateway publishes to.
EXCHANGE: Final = "dicom-gateway"
#: Binding key that matches the association-released events of every pipeline.
ASSOCIATION_RELEASED_BINDING: Final = "association.released.*"
#: Binding key that matches the stable-study events of every pipeline.
STUDY_STABLE_BINDING: Final = "study.stable.*"
#: Routing key of export requests; the export service's queue is bound to it.
EXPORT_REQUESTED_ROUTING_KEY: Final = "export.requested"
#: Routing key of export completions, unless the request names its own reply routing key.
EXPORT_COMPLETED_ROUTING_KEY: Final = "export.completed"
#: Longest routing key, in UTF-8 bytes: AMQP 0-9-1 carries it as a short string.
ROUTING_KEY_MAX_BYTES: Final = 255

#: A pipeline name's grammar. No dots: the name is exactly one routing-key word, so "*" in a
#: binding matches it.
PIPELINE_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"

# Used with fullmatch, because "$" alone would also accept a trailing newline.
_PIPELINE: Final = re.compile(PIPELINE_PATTERN)


def is_valid_pipeline(name: str) -> bool:
    """Whether ``name`` can name a pipeline: 1 to 64 ASCII letters, digits, ``-`` or ``_``."""
    return _PIPELINE.fullmatch(name) is not None


def is_valid_routing_key(key: str) -> bool:
    """Whether ``key`` can be published with: 1 to 255 UTF-8 bytes and no ``*`` or ``#``.

    The wildcards are refused because they only mean something in a binding, so a key holding
    one is almost certainly a binding pattern given by mistake.
    """
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        return False
    return 0 < size <= ROUTING_KEY_MAX_BYTES and "*" not in key and "#" not in key


def association_released_routing_key(pipeline: str) -> str:
    """The routing key of the association-released events announced to ``pipeline``."""
    if not is_valid_pipeline(pipeline):
        raise ContractError(f"{pipeline!r} is not a valid pipeline name")
    return f"association.released.{pipeline}"


def study_stable_routing_key(pipeline: str) -> str:
    """The routing key of the stable-study events announced to ``pipeline``."""
    if not is_valid_pipeline(pipeline):
        raise ContractError(f"{pipeline!r} is not a valid pipeline name")
    return f"study.stable.{pipeline}"


def topic_matches(binding: str, routing_key: str) -> bool:
    """Whether a topic-exchange ``binding`` routes ``routing_key``, as RabbitMQ decides it.

    Words are separated by dots; ``*`` stands for exactly one word and ``#`` for zero or more.
    The local event log uses this to give its subscribers the same routing as RabbitMQ.
    """
    return _match_words(tuple(binding.split(".")), tuple(routing_key.split(".")))


def _match_words(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match_words(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match_words(rest, words[1:])
