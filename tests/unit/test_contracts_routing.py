import pytest

from contracts.errors import ContractError
from contracts.routing import (
    ASSOCIATION_RELEASED_BINDING,
    EXCHANGE,
    association_released_routing_key,
    is_valid_pipeline,
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
