import pytest

from contracts.errors import ContractError
from contracts.routing import (
    ASSOCIATION_RELEASED_BINDING,
    EXCHANGE,
    association_released_routing_key,
    is_valid_pipeline,
    topic_matches,
)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("default", True),
        ("ct-ai_2", True),
        ("A", True),
        ("A" * 64, True),
        ("A" * 65, False),
        ("", False),
        ("a.b", False),
        ("a b", False),
        ("a*", False),
        ("a#", False),
        ("a/b", False),
        ("caf\u00e9", False),
        ("a\n", False),
    ],
)
def test_is_valid_pipeline(name: str, valid: bool) -> None:
    assert is_valid_pipeline(name) is valid


@pytest.mark.parametrize(
    ("pipeline", "routing_key"),
    [
        ("default", "association.released.default"),
        ("ct-ai_2", "association.released.ct-ai_2"),
        ("A" * 64, "association.released." + "A" * 64),
    ],
)
def test_association_released_routing_key(pipeline: str, routing_key: str) -> None:
    assert association_released_routing_key(pipeline) == routing_key


@pytest.mark.parametrize("pipeline", ["", "a.b", "#", "*", "A" * 65])
def test_association_released_routing_key_rejects_invalid_pipelines(pipeline: str) -> None:
    with pytest.raises(ContractError, match="not a valid pipeline name"):
        association_released_routing_key(pipeline)


def test_binding_matches_exactly_one_word_after_the_event_prefix() -> None:
    # A "*" matches one routing-key word, so the binding sees every pipeline's key only if the key
    # is the binding's prefix plus a single dot-free word.
    prefix = ASSOCIATION_RELEASED_BINDING.removesuffix("*")
    assert prefix + "*" == ASSOCIATION_RELEASED_BINDING
    suffix = association_released_routing_key("default").removeprefix(prefix)
    assert suffix == "default"


def test_default_exchange_name() -> None:
    assert EXCHANGE == "dicom-gateway"


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [
        ("export.requested", "export.requested", True),
        ("export.requested", "export.requested.x", False),
        ("association.released.*", "association.released.default", True),
        ("association.released.*", "association.released", False),
        ("association.released.*", "association.released.a.b", False),
        ("association.#", "association", True),
        ("association.#", "association.released.ct", True),
        ("#", "anything.at.all", True),
        ("#.completed", "export.completed", True),
        ("#.completed", "completed", True),
        ("*.completed", "export.completed", True),
        ("*.completed", "a.export.completed", False),
        ("export.*.done", "export.x.done", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_topic_bindings_route_as_rabbitmq_does(binding: str, key: str, expected: bool) -> None:
    assert topic_matches(binding, key) is expected
